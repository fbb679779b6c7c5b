//! Real DNS servers for the tests, the demo and the benches: dnsmasq (own directory, own port or
//! a fixed one, in the calling namespace or a lab's, killed on drop even when a test panics),
//! plus two stand-ins dnsmasq cannot play: a server that answers one response code to
//! everything and a socket that never answers. And a stub lookup, to see what a server answers.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::lab::{Lab, Side, netns};
use crate::tools;

/// How long dnsmasq gets to answer after a start or to serve a rewritten hosts file.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "enforcer-dns-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What one dnsmasq instance serves: command-line records and hosts files.
#[derive(Clone, Debug)]
pub struct Zone {
    args: Vec<String>,
    hosts: Vec<String>,
    log_queries: bool,
}

impl Default for Zone {
    fn default() -> Self {
        Self {
            args: Vec::new(),
            hosts: Vec::new(),
            log_queries: true,
        }
    }
}

impl Zone {
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers for names below `domain` come only from this instance: unknown names are NXDOMAIN,
    /// a missing family is NOERROR without data (without it dnsmasq would say REFUSED). `#`
    /// means every name.
    pub fn local(mut self, domain: &str) -> Self {
        self.args.push(format!("--local=/{domain}/"));
        self
    }

    /// `--host-record=name,addr[,addr6][,ttl]`.
    pub fn host(mut self, name: &str, addresses: &[&str], ttl: Option<u32>) -> Self {
        let mut arg = format!("--host-record={name}");
        for a in addresses {
            arg.push(',');
            arg.push_str(a);
        }
        if let Some(ttl) = ttl {
            arg.push_str(&format!(",{ttl}"));
        }
        self.args.push(arg);
        self
    }

    /// `--cname=alias,target[,ttl]` (the target must be a name this instance knows).
    pub fn cname(mut self, alias: &str, target: &str, ttl: Option<u32>) -> Self {
        let mut arg = format!("--cname={alias},{target}");
        if let Some(ttl) = ttl {
            arg.push_str(&format!(",{ttl}"));
        }
        self.args.push(arg);
        self
    }

    /// `--address=/name/addr`: the name and everything below it.
    pub fn address(mut self, name: &str, address: &str) -> Self {
        self.args.push(format!("--address=/{name}/{address}"));
        self
    }

    /// TTL of hosts-file and host-record answers without their own.
    pub fn local_ttl(mut self, ttl: u32) -> Self {
        self.args.push(format!("--local-ttl={ttl}"));
        self
    }

    /// A hosts file (`ADDR NAME` lines), loaded with `--addn-hosts`.
    pub fn hosts_file(mut self, content: String) -> Self {
        self.hosts.push(content);
        self
    }

    /// No log line per query (for benchmarks: thousands of queries a second).
    pub fn without_query_log(mut self) -> Self {
        self.log_queries = false;
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }
}

/// A dnsmasq instance; `addr` is its first listening address and its port.
pub struct Dnsmasq {
    child: Option<Child>,
    pub addr: SocketAddr,
    listen: Vec<IpAddr>,
    netns: Option<PathBuf>,
    dir: TempDir,
    generation: usize,
}

impl Dnsmasq {
    /// Starts dnsmasq for `zone` on 127.0.0.1 and a free port, in the calling thread's network
    /// namespace, and waits until it answers.
    pub fn start(zone: &Zone) -> Result<Self> {
        Self::start_at(None, &[IpAddr::V4(Ipv4Addr::LOCALHOST)], None, zone)
    }

    /// Starts dnsmasq for `zone` as the lab's DNS server beyond the gateway: in the server
    /// namespace, on port 53 of both server addresses.
    pub fn on_lab_server(lab: &crate::lab::Lab, zone: &Zone) -> Result<Self> {
        use crate::lab::{SERVER_V4, SERVER_V6, Side};
        Self::start_in(
            &lab.netns_path(Side::Server),
            &[IpAddr::V4(SERVER_V4), IpAddr::V6(SERVER_V6)],
            Some(53),
            zone,
        )
    }

    /// Starts dnsmasq for `zone` in the network namespace at `netns` (a lab's), listening on
    /// `listen` at `port` (a free one when `None`), and waits until it answers.
    pub fn start_in(
        netns: &Path,
        listen: &[IpAddr],
        port: Option<u16>,
        zone: &Zone,
    ) -> Result<Self> {
        Self::start_at(Some(netns.to_path_buf()), listen, port, zone)
    }

    fn start_at(
        netns: Option<PathBuf>,
        listen: &[IpAddr],
        port: Option<u16>,
        zone: &Zone,
    ) -> Result<Self> {
        let first = *listen
            .first()
            .ok_or_else(|| anyhow!("dnsmasq needs a listening address"))?;
        tools::path(tools::DNSMASQ)?;
        let mut server = Self {
            child: None,
            addr: SocketAddr::new(first, port.unwrap_or(0)),
            listen: listen.to_vec(),
            netns,
            dir: TempDir::new("dnsmasq")?,
            generation: 0,
        };
        if port.is_some() {
            server.spawn(zone)?;
            return Ok(server);
        }
        for _ in 0..10 {
            server
                .addr
                .set_port(server.in_netns(move || free_port(first))?);
            match server.spawn(zone) {
                Ok(()) => return Ok(server),
                // Another test took the port between probing and binding: try another one.
                Err(error) if in_use(&error) => continue,
                Err(error) => return Err(error),
            }
        }
        bail!("dnsmasq: no free port after 10 tries")
    }

    /// Replaces the served records: stops this instance and starts a new one on the same port.
    pub fn restart(&mut self, zone: &Zone) -> Result<()> {
        self.stop();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.spawn(zone) {
                Ok(()) => return Ok(()),
                // The old socket may linger for a moment after the kill.
                Err(error) if in_use(&error) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(error) => return Err(error.context("dnsmasq did not restart")),
            }
        }
    }

    /// Rewrites the first hosts file of the running instance, makes dnsmasq re-read it
    /// (SIGHUP, no restart) and waits until it answers every name of `content` (`ADDR NAME`
    /// lines) with exactly the addresses `content` gives it.
    pub fn rewrite_hosts(&self, content: &str) -> Result<()> {
        let expected = hosts_entries(content)?;
        let path = self.hosts_path(self.generation, 0);
        fs::write(&path, content).with_context(|| format!("rewriting {}", path.display()))?;
        let pid = self
            .child
            .as_ref()
            .map(Child::id)
            .ok_or_else(|| anyhow!("dnsmasq is not running"))?;
        let pid = libc::pid_t::try_from(pid)?;
        // SAFETY: plain kill(2) on our own child, not reaped yet.
        if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
            bail!("SIGHUP to dnsmasq: {}", std::io::Error::last_os_error());
        }
        let server = self.addr;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let served = self.in_netns(|| {
                let mut served = BTreeMap::new();
                for name in expected.keys() {
                    let mut all = lookup(server, name, RecordType::A).unwrap_or_default();
                    all.extend(lookup(server, name, RecordType::AAAA).unwrap_or_default());
                    served.insert(name.clone(), all.into_iter().collect::<BTreeSet<_>>());
                }
                Ok(served)
            })?;
            if served == expected {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "dnsmasq still answers {served:?} {READY_TIMEOUT:?} after the hosts file \
                     was rewritten to {expected:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// dnsmasq's log (with `--log-queries`, one line per query) of the current instance.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join(format!("log.{}", self.generation)))
            .unwrap_or_default()
    }

    fn hosts_path(&self, generation: usize, index: usize) -> PathBuf {
        self.dir.path().join(format!("hosts.{generation}.{index}"))
    }

    /// Runs `f` in this server's namespace (on a thread there), or right here.
    fn in_netns<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        match &self.netns {
            Some(path) => netns::run_in(path, f),
            None => f(),
        }
    }

    fn spawn(&mut self, zone: &Zone) -> Result<()> {
        self.generation += 1;
        let generation = self.generation;
        let dir = self.dir.path();
        let stderr_path = dir.join(format!("stderr.{generation}"));
        let stderr = File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        let mut command = Command::new(tools::path(tools::DNSMASQ)?);
        command
            .arg("--keep-in-foreground")
            .arg("--conf-file=/dev/null")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg("--bind-interfaces")
            .arg(format!("--port={}", self.addr.port()))
            .arg(format!(
                "--pid-file={}",
                dir.join(format!("pid.{generation}")).display()
            ))
            .arg(format!(
                "--log-facility={}",
                dir.join(format!("log.{generation}")).display()
            ));
        if zone.log_queries {
            command.arg("--log-queries");
        }
        for address in &self.listen {
            command.arg(format!("--listen-address={address}"));
        }
        for (index, content) in zone.hosts.iter().enumerate() {
            let path = self.hosts_path(generation, index);
            fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
            command.arg(format!("--addn-hosts={}", path.display()));
        }
        command
            .args(&zone.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // A child starts in the namespace of the thread that forks it.
        let child = self.in_netns(|| command.spawn().context("starting dnsmasq"))?;
        self.child = Some(child);

        let addr = self.addr;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                let message = fs::read_to_string(&stderr_path).unwrap_or_default();
                bail!("dnsmasq exited with {status}: {}", message.trim());
            }
            if self.in_netns(move || Ok(answers(addr)))? {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                bail!("dnsmasq on {addr} did not answer within {READY_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

fn in_use(error: &anyhow::Error) -> bool {
    format!("{error:#}").contains("Address already in use")
}

/// `ADDR NAME...` lines into each name's set of addresses.
fn hosts_entries(content: &str) -> Result<BTreeMap<String, BTreeSet<IpAddr>>> {
    let mut entries: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
    for line in content.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut words = line.split_whitespace();
        let address: IpAddr = words
            .next()
            .unwrap_or_default()
            .parse()
            .with_context(|| format!("hosts line {line:?}"))?;
        for name in words {
            entries.entry(name.to_owned()).or_default().insert(address);
        }
    }
    Ok(entries)
}

/// A port free for both UDP and TCP on `address` right now (in the calling namespace).
pub fn free_port(address: IpAddr) -> Result<u16> {
    for _ in 0..100 {
        let Ok(udp) = UdpSocket::bind((address, 0)) else {
            continue;
        };
        let port = udp.local_addr()?.port();
        if TcpListener::bind((address, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port on {address}")
}

/// A DNS query for `name` of type `qtype` (1 = A), with the given id.
pub fn query_packet(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        p.push(u8::try_from(label.len()).unwrap_or(63));
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    p
}

fn unspecified_for(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// Asks `server` (from the calling thread's namespace) for `name`'s records of `qtype` and
/// returns the addresses of the answer (empty for NXDOMAIN or no data); an error when nothing
/// answers within a second.
pub fn lookup(server: SocketAddr, name: &str, qtype: RecordType) -> Result<Vec<IpAddr>> {
    lookup_within(server, name, qtype, Duration::from_secs(1))
}

/// The lab's client asks `server` (port 53) for `name`'s records of `qtype` and gets the first
/// address of the answer; None when the answer has none or nothing answers within 2 s.
pub fn client_lookup(lab: &Lab, server: IpAddr, name: &str, qtype: RecordType) -> Option<IpAddr> {
    let name = name.to_owned();
    lab.in_netns(Side::Client, move || {
        let answer = lookup_within((server, 53).into(), &name, qtype, Duration::from_secs(2));
        Ok(answer
            .ok()
            .and_then(|addresses| addresses.into_iter().next()))
    })
    .expect("running the lookup in the client's namespace")
}

/// [`lookup`] with a time limit for the answer.
fn lookup_within(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    timeout: Duration,
) -> Result<Vec<IpAddr>> {
    let socket = UdpSocket::bind(unspecified_for(server))?;
    socket.set_read_timeout(Some(timeout))?;
    let id = rand::random::<u16>();
    let mut query = Message::new();
    query.set_id(id);
    query.set_recursion_desired(true);
    query.add_query(Query::query(Name::from_str(name)?, qtype));
    socket.send_to(&query.to_vec()?, server)?;
    let mut buf = [0u8; 4096];
    loop {
        let (n, from) = socket
            .recv_from(&mut buf)
            .with_context(|| format!("no answer from {server} for {name}"))?;
        let Ok(answer) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if from != server || answer.id() != id {
            continue;
        }
        return Ok(answer
            .answers()
            .iter()
            .filter_map(|record| match record.data() {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect());
    }
}

/// Whether something at `addr` answers a DNS query over UDP.
fn answers(addr: SocketAddr) -> bool {
    let Ok(socket) = UdpSocket::bind(unspecified_for(addr)) else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
    if socket
        .send_to(&query_packet(0x4242, "probe.invalid", 1), addr)
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(socket.recv_from(&mut buf), Ok((n, _)) if n >= 12 && buf[..2] == [0x42, 0x42])
}

/// A UDP server answering every query with one response code (2 = SERVFAIL), echoing the question.
pub struct RcodeServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub queries: Arc<AtomicUsize>,
}

impl RcodeServer {
    pub fn start(rcode: u8) -> Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0").context("binding the stand-in server")?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        let thread = {
            let stop = Arc::clone(&stop);
            let queries = Arc::clone(&queries);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    queries.fetch_add(1, Ordering::Relaxed);
                    if let Some(reply) = rcode_reply(&buf[..n], rcode) {
                        let _ = socket.send_to(&reply, from);
                    }
                }
            })
        };
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
            queries,
        })
    }
}

impl Drop for RcodeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn rcode_reply(query: &[u8], rcode: u8) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut end = 12;
    loop {
        let len = usize::from(*query.get(end)?);
        end += 1 + len;
        if len == 0 {
            break;
        }
    }
    end += 4;
    let question = query.get(12..end)?;
    let rd = query[2] & 0x01;
    let mut reply = Vec::with_capacity(end);
    reply.extend_from_slice(&query[..2]);
    reply.push(0x80 | rd);
    reply.push(0x80 | (rcode & 0x0f));
    reply.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    reply.extend_from_slice(question);
    Some(reply)
}

/// A bound UDP socket that never reads or answers: a dead resolver that does not even send ICMP.
pub struct SilentServer {
    pub addr: SocketAddr,
    _socket: UdpSocket,
}

impl SilentServer {
    pub fn start() -> Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0").context("binding the silent socket")?;
        let addr = socket.local_addr()?;
        Ok(Self {
            addr,
            _socket: socket,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lines_give_each_name_its_addresses() {
        let entries = hosts_entries("198.18.0.1 a.test b.test\n\n2001:db8::1 a.test\n").unwrap();
        let a: BTreeSet<IpAddr> = ["198.18.0.1", "2001:db8::1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(entries["a.test"], a);
        assert_eq!(entries["b.test"].len(), 1);
        assert!(hosts_entries("nonsense a.test\n").is_err());
    }
}
