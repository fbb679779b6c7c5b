//! Throwaway network labs: client ⟷ gateway ⟷ server network namespaces joined by veth pairs,
//! the real `enforcer` daemon on the gateway, real traffic, and the daemon's metrics.
//!
//! ```text
//!  client netns            gateway netns (enforcer, XDP on g0 and g1)          server netns
//!  c0 198.18.1.2/24  ────  g0 198.18.1.1/24      g1 198.18.2.1/24  ────  s0 198.18.2.2/24
//!     2001:db8:1::2/64        2001:db8:1::1/64      2001:db8:2::1/64        2001:db8:2::2/64
//!                                                                        lo: the "internet" hosts
//! ```
//!
//! Only 198.18.0.0/15 and 2001:db8::/32 are used. Every lab has its own namespaces, temp
//! directory and BPF filesystem, so tests run in parallel; everything is removed when the
//! `Lab` is dropped, also on panic.

pub mod daemon;
pub mod metrics;
pub mod netns;
pub mod prometheus;
pub mod traffic;

use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

pub use daemon::{Daemon, enforcer_binary};
pub use metrics::Metrics;
pub use traffic::{Connect, Server, UdpStream};

/// The three namespaces of a lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Gateway,
    Server,
}

impl Side {
    const ALL: [Side; 3] = [Side::Client, Side::Gateway, Side::Server];

    fn suffix(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Gateway => "gw",
            Side::Server => "server",
        }
    }
}

pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
pub const GATEWAY_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const GATEWAY_CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub const GATEWAY_SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
pub const GATEWAY_SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);

/// "Internet" hosts on the server's loopback, reached through the gateway. Each IPv4 host
/// lies in 198.19.0.0/16 and each IPv6 host in its own /48 under 2001:db8::/32.
pub const INTERNET_V4: [Ipv4Addr; 5] = [
    Ipv4Addr::new(198, 19, 10, 5),
    Ipv4Addr::new(198, 19, 10, 77),
    Ipv4Addr::new(198, 19, 20, 5),
    Ipv4Addr::new(198, 19, 30, 5),
    Ipv4Addr::new(198, 19, 40, 5),
];
pub const INTERNET_V6: [Ipv6Addr; 5] = [
    Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 5),
    Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 0x77),
    Ipv6Addr::new(0x2001, 0xdb8, 0x20, 0, 0, 0, 0, 5),
    Ipv6Addr::new(0x2001, 0xdb8, 0x30, 0, 0, 0, 0, 5),
    Ipv6Addr::new(0x2001, 0xdb8, 0x40, 0, 0, 0, 0, 5),
];

/// A second client site's host and the gateway's address on its link (see `add_second_client`).
pub const CLIENT_B_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 2);
pub const CLIENT_B_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 2);
pub const GATEWAY_CLIENT_B_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 1);
pub const GATEWAY_CLIENT_B_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 1);

/// Where the daemon serves metrics, inside the gateway namespace.
pub const METRICS_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 9464);

/// A port nothing listens on, for the lab's own connectivity check.
const WARM_UP_PORT: u16 = 9;

/// How long the daemon gets to answer its metrics endpoint after start.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A lab: three namespaces, a BPF filesystem, a temp directory and at most one daemon.
pub struct Lab {
    id: String,
    dir: PathBuf,
    namespaces: Vec<String>,
    bpffs_mounted: bool,
    daemon: Option<Daemon>,
    logs: Vec<PathBuf>,
    policies: usize,
    daemon_args: Vec<String>,
    daemon_wrapper: Vec<String>,
    /// The `--iface` values (`g0`, `g1` unless a test gives them roles).
    interfaces: Vec<String>,
    /// A bare XDP_PASS on the client's link, so that answers the gateway sends back with
    /// XDP_TX reach the client (see `pass_on_client_link`).
    client_pass: Option<enforcer::datapath::Datapath>,
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl Lab {
    /// Builds the topology. Needs root.
    pub fn new() -> Result<Lab> {
        if !is_root() {
            bail!("the namespace lab needs root (network namespaces, XDP, a BPF filesystem)");
        }
        crate::tools::path(crate::tools::IP)?;
        reap_stale();
        let id = format!(
            "enf{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let dir = std::env::temp_dir().join(&id);
        // From here on, Drop cleans up whatever was made.
        let mut lab = Lab {
            id,
            dir,
            namespaces: Vec::new(),
            bpffs_mounted: false,
            daemon: None,
            logs: Vec::new(),
            policies: 0,
            daemon_args: Vec::new(),
            daemon_wrapper: Vec::new(),
            interfaces: vec!["g0".into(), "g1".into()],
            client_pass: None,
        };
        lab.build()
            .with_context(|| format!("building lab {}", lab.id))?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<()> {
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir)
                .with_context(|| format!("clearing {}", self.dir.display()))?;
        }
        std::fs::create_dir_all(self.dir.join("bpffs"))
            .with_context(|| format!("creating {}", self.dir.display()))?;
        std::fs::create_dir_all(self.dir.join("state"))?;
        mount_bpffs(&self.dir.join("bpffs"))?;
        self.bpffs_mounted = true;

        for side in Side::ALL {
            let name = self.netns(side);
            run(Command::new("ip").args(["netns", "add", &name]))?;
            self.namespaces.push(name);
        }
        for side in Side::ALL {
            // Addresses are usable at once (no duplicate address detection, also for the
            // link-local ones of the veths created below).
            self.sysctl(side, "net/ipv6/conf/default/accept_dad", "0")?;
            self.sysctl(side, "net/ipv6/conf/all/accept_dad", "0")?;
        }
        self.sysctl(Side::Gateway, "net/ipv4/ip_forward", "1")?;
        self.sysctl(Side::Gateway, "net/ipv6/conf/all/forwarding", "1")?;

        let (client, gw, server) = (
            self.netns(Side::Client),
            self.netns(Side::Gateway),
            self.netns(Side::Server),
        );
        run(Command::new("ip").args([
            "link", "add", "c0", "netns", &client, "type", "veth", "peer", "name", "g0", "netns",
            &gw,
        ]))?;
        run(Command::new("ip").args([
            "link", "add", "g1", "netns", &gw, "type", "veth", "peer", "name", "s0", "netns",
            &server,
        ]))?;

        let addresses: [(Side, &str, String); 8] = [
            (Side::Client, "c0", format!("{CLIENT_V4}/24")),
            (Side::Client, "c0", format!("{CLIENT_V6}/64")),
            (Side::Gateway, "g0", format!("{GATEWAY_CLIENT_V4}/24")),
            (Side::Gateway, "g0", format!("{GATEWAY_CLIENT_V6}/64")),
            (Side::Gateway, "g1", format!("{GATEWAY_SERVER_V4}/24")),
            (Side::Gateway, "g1", format!("{GATEWAY_SERVER_V6}/64")),
            (Side::Server, "s0", format!("{SERVER_V4}/24")),
            (Side::Server, "s0", format!("{SERVER_V6}/64")),
        ];
        for (side, dev, addr) in &addresses {
            self.add_address(*side, dev, addr)?;
        }
        for addr in INTERNET_V4 {
            self.add_address(Side::Server, "lo", &format!("{addr}/32"))?;
        }
        for addr in INTERNET_V6 {
            self.add_address(Side::Server, "lo", &format!("{addr}/128"))?;
        }
        for (side, dev) in [
            (Side::Client, "lo"),
            (Side::Client, "c0"),
            (Side::Gateway, "lo"),
            (Side::Gateway, "g0"),
            (Side::Gateway, "g1"),
            (Side::Server, "lo"),
            (Side::Server, "s0"),
        ] {
            self.ip(side, &["link", "set", "dev", dev, "up"])?;
        }
        // A veth leaves checksums for the receiver to trust (offload): a frame the gateway holds
        // and puts back would then carry a partial one. End hosts on a wire send complete ones.
        let ethtool = crate::tools::path(crate::tools::ETHTOOL)?;
        for (side, dev) in [(Side::Client, "c0"), (Side::Server, "s0")] {
            run(Command::new("ip")
                .args(["netns", "exec", &self.netns(side)])
                .arg(&ethtool)
                .args(["-K", dev, "tx", "off"]))?;
        }

        let (gw_c4, gw_c6) = (GATEWAY_CLIENT_V4.to_string(), GATEWAY_CLIENT_V6.to_string());
        let (gw_s4, gw_s6) = (GATEWAY_SERVER_V4.to_string(), GATEWAY_SERVER_V6.to_string());
        let (srv4, srv6) = (SERVER_V4.to_string(), SERVER_V6.to_string());
        self.ip(Side::Client, &["route", "add", "default", "via", &gw_c4])?;
        self.ip(
            Side::Client,
            &["-6", "route", "add", "default", "via", &gw_c6],
        )?;
        self.ip(Side::Server, &["route", "add", "default", "via", &gw_s4])?;
        self.ip(
            Side::Server,
            &["-6", "route", "add", "default", "via", &gw_s6],
        )?;
        self.ip(
            Side::Gateway,
            &["route", "add", "198.19.0.0/16", "via", &srv4],
        )?;
        let mut v6_routes: Vec<String> = INTERNET_V6.iter().map(|a| slash48(*a)).collect();
        v6_routes.dedup();
        for net in &v6_routes {
            self.ip(Side::Gateway, &["-6", "route", "add", net, "via", &srv6])?;
        }
        self.warm_up()
    }

    /// Proves the round trip client → server → client for both families (a TCP connection to
    /// a closed port is answered with a reset) and, on the way, resolves every neighbour, so
    /// that no test packet waits in (or overflows) a neighbour queue.
    fn warm_up(&self) -> Result<()> {
        let targets = [
            SocketAddr::new(IpAddr::V4(INTERNET_V4[4]), WARM_UP_PORT),
            SocketAddr::new(IpAddr::V6(INTERNET_V6[4]), WARM_UP_PORT),
        ];
        for target in targets {
            match self.tcp_connect(target, Duration::from_secs(3))? {
                Connect::Refused => {}
                other => bail!(
                    "the lab routes nothing: a TCP connection from the client to {target} \
                     (no listener) should be refused, it came to {other:?}"
                ),
            }
        }
        Ok(())
    }

    fn add_address(&self, side: Side, dev: &str, addr: &str) -> Result<()> {
        if addr.contains(':') {
            self.ip(side, &["-6", "addr", "add", addr, "dev", dev, "nodad"])?;
        } else {
            self.ip(side, &["addr", "add", addr, "dev", dev])?;
        }
        Ok(())
    }

    /// A second client namespace behind the gateway (another site: a ministry's own link):
    /// `cb0` CLIENT_B_V4/24, CLIENT_B_V6/64 ⟷ gateway `g2`, which the daemon enforces on too.
    /// Call before starting the daemon.
    pub fn add_second_client(&mut self) -> Result<()> {
        let name = self.second_client_netns();
        run(Command::new("ip").args(["netns", "add", &name]))?;
        self.namespaces.push(name.clone());
        let gw = self.netns(Side::Gateway);
        run(Command::new("ip").args([
            "link", "add", "cb0", "netns", &name, "type", "veth", "peer", "name", "g2", "netns",
            &gw,
        ]))?;
        let in_b = |args: &[&str]| -> Result<Output> {
            let mut command = Command::new("ip");
            command.args(["-n", &name]).args(args);
            run(&mut command)
        };
        in_b(&["addr", "add", &format!("{CLIENT_B_V4}/24"), "dev", "cb0"])?;
        in_b(&[
            "-6",
            "addr",
            "add",
            &format!("{CLIENT_B_V6}/64"),
            "dev",
            "cb0",
            "nodad",
        ])?;
        self.add_address(Side::Gateway, "g2", &format!("{GATEWAY_CLIENT_B_V4}/24"))?;
        self.add_address(Side::Gateway, "g2", &format!("{GATEWAY_CLIENT_B_V6}/64"))?;
        in_b(&["link", "set", "dev", "lo", "up"])?;
        in_b(&["link", "set", "dev", "cb0", "up"])?;
        self.ip(Side::Gateway, &["link", "set", "dev", "g2", "up"])?;
        in_b(&[
            "route",
            "add",
            "default",
            "via",
            &GATEWAY_CLIENT_B_V4.to_string(),
        ])?;
        in_b(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &GATEWAY_CLIENT_B_V6.to_string(),
        ])?;
        let ethtool = crate::tools::path(crate::tools::ETHTOOL)?;
        run(Command::new("ip")
            .args(["netns", "exec", &name])
            .arg(&ethtool)
            .args(["-K", "cb0", "tx", "off"]))?;
        self.interfaces.push("g2".into());
        Ok(())
    }

    fn second_client_netns(&self) -> String {
        format!("{}-clientb", self.id)
    }

    /// Sends `count` datagrams from the second client (see `add_second_client`) to `dst`.
    pub fn send_udp_from_second_client(&self, dst: SocketAddr, count: usize) -> Result<usize> {
        netns::run_in(&netns::path_of(&self.second_client_netns()), || {
            traffic::send_udp(dst, count)
        })
    }

    /// Attaches a bare XDP_PASS to the client's end of its link (c0): a veth delivers frames sent
    /// back with XDP_TX (the gateway's answers to blocked names) only to a peer running XDP.
    pub fn pass_on_client_link(&mut self) -> Result<()> {
        let datapath = self.in_netns(Side::Client, || {
            let mut datapath = enforcer::datapath::Datapath::load_unpinned()?;
            datapath.attach_pass("c0")?;
            Ok(datapath)
        })?;
        self.client_pass = Some(datapath);
        Ok(())
    }

    /// Loads an nftables `script` (`nft -f -`) on the gateway.
    pub fn nft(&self, script: &str) -> Result<()> {
        use std::io::Write as _;
        let nft = crate::tools::path(crate::tools::NFT)?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.netns(Side::Gateway)])
            .arg(&nft)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running nft")?;
        child
            .stdin
            .take()
            .context("nft's standard input")?
            .write_all(script.as_bytes())?;
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!(
                "nft -f failed ({}) on {script:?}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Writes `/proc/sys/<key>` inside the namespace of `side`.
    pub fn sysctl(&self, side: Side, key: &str, value: &str) -> Result<()> {
        let path = Path::new("/proc/sys").join(key);
        self.in_netns(side, || {
            std::fs::write(&path, value)
                .with_context(|| format!("writing {value} to {}", path.display()))
        })
    }

    /// This lab's unique id (also the prefix of its namespace names).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The lab's temp directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The name of the namespace of `side`.
    pub fn netns(&self, side: Side) -> String {
        format!("{}-{}", self.id, side.suffix())
    }

    /// The path of the namespace of `side` (for `setns`, or to start a process there).
    pub fn netns_path(&self, side: Side) -> PathBuf {
        netns::path_of(&self.netns(side))
    }

    /// Extra `enforcer run` options for every daemon this lab starts from now on.
    pub fn add_daemon_args(&mut self, args: &[&str]) {
        self.daemon_args.extend(args.iter().map(|a| a.to_string()));
    }

    /// Forgets the extra options given so far.
    pub fn clear_daemon_args(&mut self) {
        self.daemon_args.clear();
    }

    /// The `--iface` values of every daemon this lab starts from now on (`g0` faces the
    /// client, `g1` the server), e.g. `["g0:inside", "g1:outside"]`.
    pub fn set_interfaces(&mut self, interfaces: &[&str]) {
        self.interfaces = interfaces.iter().map(|i| i.to_string()).collect();
    }

    /// A program (and its options) that every daemon this lab starts from now on is run
    /// through, inside the gateway namespace (e.g. `setpriv` to start it with fewer
    /// capabilities); empty for none.
    pub fn set_daemon_wrapper(&mut self, wrapper: &[&str]) {
        self.daemon_wrapper = wrapper.iter().map(|a| a.to_string()).collect();
    }

    /// The daemon's `--state-dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The daemon's `--bpffs` directory (on the lab's own BPF filesystem).
    pub fn bpffs(&self) -> PathBuf {
        self.dir.join("bpffs").join("enforcer")
    }

    /// Runs `f` on a thread inside the namespace of `side` (sockets it opens live there).
    pub fn in_netns<T, F>(&self, side: Side, f: F) -> Result<T>
    where
        T: Send,
        F: FnOnce() -> Result<T> + Send,
    {
        netns::run_in(&netns::path_of(&self.netns(side)), f)
    }

    /// `ip -n <netns of side> ARGS...`; returns stdout.
    pub fn ip(&self, side: Side, args: &[&str]) -> Result<String> {
        let output = run(Command::new("ip")
            .arg("-n")
            .arg(self.netns(side))
            .args(args))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Whether an XDP program is attached to `iface` in the gateway (`ip -d link show`).
    pub fn xdp_attached(&self, iface: &str) -> Result<bool> {
        let text = self.ip(Side::Gateway, &["-d", "link", "show", "dev", iface])?;
        Ok(text.contains("prog/xdp"))
    }

    /// Writes a policy directory with the given `(file name, YAML)` pairs; returns its path.
    pub fn write_policy(&mut self, files: &[(&str, &str)]) -> Result<PathBuf> {
        self.policies += 1;
        let dir = self.dir.join(format!("policy-{}", self.policies));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(dir)
    }

    /// Starts a server in the server namespace with UDP sockets and TCP listeners bound to
    /// the given addresses.
    pub fn start_server(&self, udp: &[SocketAddr], tcp: &[SocketAddr]) -> Result<Server> {
        Server::start(netns::path_of(&self.netns(Side::Server)), udp, tcp)
    }

    /// Sends `count` datagrams from the client to `dst`.
    pub fn send_udp(&self, dst: SocketAddr, count: usize) -> Result<usize> {
        self.in_netns(Side::Client, || traffic::send_udp(dst, count))
    }

    /// Sends one raw Ethernet frame from the client's side of the link to the gateway.
    pub fn send_client_frame(&self, frame: &[u8]) -> Result<()> {
        self.in_netns(Side::Client, || traffic::send_frame("c0", frame))
    }

    /// A steady UDP flow from the client to `dsts` until the returned stream is dropped.
    pub fn udp_stream(&self, dsts: &[SocketAddr], interval: Duration) -> Result<UdpStream> {
        UdpStream::start(netns::path_of(&self.netns(Side::Client)), dsts, interval)
    }

    /// The process id of the running daemon.
    pub fn daemon_pid(&self) -> Option<i32> {
        self.daemon.as_ref().map(Daemon::pid)
    }

    /// The daemon's `--socket`.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("enforcer.sock")
    }

    /// Runs a CLI command against this lab's daemon (`enforcer --socket S ARGS...`).
    pub fn control(&self, args: &[&str]) -> Result<Output> {
        let socket = self.socket().display().to_string();
        let mut all = vec!["--socket", socket.as_str()];
        all.extend_from_slice(args);
        self.enforcer(&all)
    }

    /// One TCP connection attempt from the client to `dst`.
    pub fn tcp_connect(&self, dst: SocketAddr, timeout: Duration) -> Result<Connect> {
        self.in_netns(Side::Client, || Ok(traffic::tcp_connect(dst, timeout)))
    }

    /// The `run` command line for this lab's gateway (without spawning it).
    pub fn daemon_command(&self, rules: &Path) -> Result<Command> {
        self.daemon_command_with(&["--rules".into(), rules.into()])
    }

    /// The `run` command line with `policy` (`--rules PATH`, or the `--bundle-*` options) for
    /// where the policy comes from.
    pub fn daemon_command_with(&self, policy: &[std::ffi::OsString]) -> Result<Command> {
        let binary = enforcer_binary()?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec"])
            .arg(self.netns(Side::Gateway))
            .args(&self.daemon_wrapper)
            .arg(binary)
            .arg("run")
            .args(policy)
            .args(self.interfaces.iter().flat_map(|i| ["--iface", i.as_str()]))
            .arg("--bpffs")
            .arg(self.bpffs())
            .arg("--metrics")
            .arg(METRICS_ADDR.to_string())
            .arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(&self.daemon_args);
        Ok(command)
    }

    /// Starts `enforcer run` in the gateway and waits until its metrics endpoint answers.
    pub fn start_daemon(&mut self, rules: &Path) -> Result<()> {
        self.spawn_daemon(rules)?;
        self.wait_ready(READY_TIMEOUT)
    }

    /// Starts `enforcer run` in the gateway without waiting for it.
    pub fn spawn_daemon(&mut self, rules: &Path) -> Result<()> {
        let command = self.daemon_command(rules)?;
        self.spawn_daemon_command(command)
    }

    /// Starts `enforcer run` following the bundle repository at `url` (pinning `root`, looking
    /// every `interval`) instead of `--rules`, and waits until its metrics endpoint answers.
    pub fn start_daemon_following(
        &mut self,
        url: &str,
        root: &Path,
        interval: Duration,
    ) -> Result<()> {
        self.spawn_daemon_following(url, root, interval)?;
        self.wait_ready(READY_TIMEOUT)
    }

    /// As [`Lab::start_daemon_following`] without waiting for it (see [`Lab::wait_ready`]).
    pub fn spawn_daemon_following(
        &mut self,
        url: &str,
        root: &Path,
        interval: Duration,
    ) -> Result<()> {
        let command = self.daemon_command_with(&[
            "--bundle-url".into(),
            url.into(),
            "--bundle-root".into(),
            root.into(),
            "--bundle-interval".into(),
            interval.as_secs().to_string().into(),
        ])?;
        self.spawn_daemon_command(command)
    }

    fn spawn_daemon_command(&mut self, mut command: Command) -> Result<()> {
        if self.daemon.is_some() {
            bail!("a daemon is already running in lab {}", self.id);
        }
        let log = self.dir.join(format!("daemon-{}.log", self.logs.len() + 1));
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", describe(&command)))?;
        self.logs.push(log.clone());
        self.daemon = Some(Daemon { child, log });
        Ok(())
    }

    /// Polls the metrics endpoint until it answers; fails with the daemon's log if the daemon
    /// exits first or the deadline passes.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let daemon = self
                .daemon
                .as_mut()
                .ok_or_else(|| anyhow!("no daemon was started"))?;
            if let Some(status) = daemon.child.try_wait()? {
                let log = daemon.log_text();
                self.daemon = None;
                bail!("the daemon exited during start-up ({status}); its log:\n{log}");
            }
            let last_error = match self.metrics() {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                bail!(
                    "the daemon did not answer on {METRICS_ADDR} within {timeout:?} ({last_error:#}); its log:\n{}",
                    self.daemon_log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for a daemon that is expected to exit by itself (a refused start); returns its
    /// status and log.
    pub fn daemon_exit(&mut self, timeout: Duration) -> Result<(ExitStatus, String)> {
        let mut daemon = self
            .daemon
            .take()
            .ok_or_else(|| anyhow!("no daemon was started"))?;
        match daemon.wait_timeout(timeout)? {
            Some(status) => Ok((status, daemon.log_text())),
            None => {
                let log = daemon.log_text();
                self.daemon = Some(daemon);
                bail!("the daemon is still running after {timeout:?}; its log:\n{log}")
            }
        }
    }

    /// SIGTERM, then wait (10 s at most) for the exit status.
    pub fn stop_daemon(&mut self) -> Result<ExitStatus> {
        let mut daemon = self
            .daemon
            .take()
            .ok_or_else(|| anyhow!("no daemon is running"))?;
        daemon.signal(libc::SIGTERM)?;
        match daemon.wait_timeout(Duration::from_secs(10))? {
            Some(status) => Ok(status),
            None => {
                let log = daemon.log_text();
                self.daemon = Some(daemon);
                bail!("the daemon ignored SIGTERM for 10 s; its log:\n{log}")
            }
        }
    }

    /// SIGKILL (a crash), then reap it.
    pub fn kill_daemon(&mut self) -> Result<()> {
        let mut daemon = self
            .daemon
            .take()
            .ok_or_else(|| anyhow!("no daemon is running"))?;
        daemon.child.kill().context("killing the daemon")?;
        daemon.child.wait().context("reaping the daemon")?;
        Ok(())
    }

    /// The log of the running daemon, or of the last one.
    pub fn daemon_log(&self) -> String {
        match (&self.daemon, self.logs.last()) {
            (Some(daemon), _) => daemon.log_text(),
            (None, Some(path)) => std::fs::read_to_string(path).unwrap_or_default(),
            (None, None) => String::new(),
        }
    }

    /// Runs `enforcer ARGS...` inside the gateway namespace and returns its output.
    pub fn enforcer(&self, args: &[&str]) -> Result<Output> {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec"])
            .arg(self.netns(Side::Gateway))
            .arg(enforcer_binary()?)
            .args(args)
            .stdin(Stdio::null());
        command
            .output()
            .with_context(|| format!("running {}", describe(&command)))
    }

    /// Scrapes the daemon's metrics from inside the gateway namespace.
    pub fn metrics(&self) -> Result<Metrics> {
        let text = self.in_netns(Side::Gateway, || {
            metrics::fetch(METRICS_ADDR, Duration::from_secs(5))
        })?;
        Metrics::parse(&text)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.child.kill();
            let _ = daemon.child.wait();
        }
        if std::thread::panicking() {
            for log in &self.logs {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                eprintln!(
                    "---- lab {}: {} ----\n{text}---- end of {} ----",
                    self.id,
                    log.display(),
                    log.display()
                );
            }
        }
        // Deleting the namespaces destroys the veths, which detaches XDP from them.
        for name in self.namespaces.drain(..).rev() {
            if let Err(e) = run(Command::new("ip").args(["netns", "del", &name])) {
                eprintln!("lab {}: {e:#}", self.id);
            }
        }
        if self.bpffs_mounted {
            if let Err(e) = unmount(&self.dir.join("bpffs")) {
                eprintln!("lab {}: {e:#}", self.id);
            }
            self.bpffs_mounted = false;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("lab {}: removing {}: {e}", self.id, self.dir.display());
        }
    }
}

/// The /48 that holds an IPv6 address, as text.
fn slash48(addr: Ipv6Addr) -> String {
    let s = addr.segments();
    format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs a command to completion; fails with its stderr unless it exits 0.
fn run(command: &mut Command) -> Result<Output> {
    let line = describe(command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `{line}`"))?;
    if !output.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("{} contains a NUL byte", path.display()))
}

fn mount_bpffs(at: &Path) -> Result<()> {
    let target = c_path(at)?;
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!(
            "mount -t bpf bpf {}: {}",
            at.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// `umount -l`: detaches the mount now, frees it when no longer busy.
fn unmount(at: &Path) -> Result<()> {
    let target = c_path(at)?;
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        bail!(
            "umount -l {}: {}",
            at.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The pid in a lab id `enf<pid>x<n>`, if `name` starts with one.
fn lab_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("enf")?;
    let (pid, rest) = rest.split_once('x')?;
    let counter_len = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    if counter_len == 0 || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let suffix = &rest[counter_len..];
    if !(suffix.is_empty() || ["-client", "-gw", "-server", "-dist"].contains(&suffix)) {
        return None;
    }
    pid.parse().ok()
}

/// Removes namespaces and temp directories left by labs of processes that no longer exist
/// (a test binary killed before its `Drop` could run).
fn reap_stale() {
    let dead = |pid: u32| !Path::new("/proc").join(pid.to_string()).exists();
    if let Ok(entries) = std::fs::read_dir("/var/run/netns") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if lab_pid(&name).is_some_and(dead) {
                let _ = run(Command::new("ip").args(["netns", "del", &name]));
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if lab_pid(&name).is_some_and(dead) && !name.contains('-') {
                let _ = unmount(&entry.path().join("bpffs"));
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// The JSON an `enforcer` command printed, after asserting that it succeeded (`what` names the
/// command in the failure); `Null` when it printed no JSON.
pub fn json_ok(output: &Output, what: &str) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{what}: exit {:?}\nstdout: {stdout}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_ids_are_recognised_strictly() {
        assert_eq!(lab_pid("enf123x0"), Some(123));
        assert_eq!(lab_pid("enf123x4-gw"), Some(123));
        assert_eq!(lab_pid("enf123x4-other"), None);
        assert_eq!(lab_pid("enf-123x4"), None);
        assert_eq!(lab_pid("enfx4"), None);
        assert_eq!(lab_pid("enf12x"), None);
    }

    #[test]
    fn routes_cover_every_internet_host() {
        assert_eq!(slash48(INTERNET_V6[0]), "2001:db8:10::/48");
        assert!(INTERNET_V4.iter().all(|a| a.octets()[..2] == [198, 19]));
    }
}
