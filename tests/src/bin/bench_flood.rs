//! Head to head (issue 16): the CPU that each way of dropping a platform's traffic costs the
//! gateway per packet, over a bare XDP_DROP program, in one run on this machine.
//!
//! Method: a fixed count of 64-byte UDP frames (60 bytes and the FCS a wire adds) is flooded by
//! trafgen from the client namespace into the gateway's veth (g0), with threaded NAPI off. The
//! busy CPU of the whole machine (/proc/stat, all CPUs: user, nice, system, irq, softirq and
//! steal, guest time excluded) over the flood, divided by the packets sent, is the cost of a
//! packet. Each round of a configuration builds a fresh lab (no residue of an earlier table or
//! hook), floods it with bare XDP_DROP attached, then with the configuration in place, and keeps
//! the difference; the medians of those differences over the rounds are reported. Beside it,
//! the same figures in trafgen's own CPU time (wait4: user + system, which with tick accounting
//! includes the softirq work run in its context: the veth's receive path and the drop), which
//! other work on a shared machine does not inflate.
//!
//! Every configuration drops on the same 40,000 non-overlapping IPv4 prefixes of 16 lengths
//! (/9 to /24) spread over the space, and the frames go to 8,192 distinct destinations spread
//! over those prefixes. A configuration whose own counter does not account for every packet sent
//! fails the run: the numbers would not be about dropping.
//!
//! Configurations: bare XDP_DROP; the enforcer (the real daemon, one drop platform);
//! iptables raw PREROUTING + ipset hash:net through iptables-legacy and iptables-nft; nftables
//! netdev ingress with an interval set.
//!
//! Usage: `bench_flood [--packets N] [--rounds N] [--out DIR]` as root, after
//! `cargo build --release -p enforcer -p tests` (`cargo xtask bench` runs it). Writes its section
//! of DIR/BENCHMARKS.md and DIR/bench-flood.json (DIR: the repository root by default).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::Read as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, anyhow, bail};
use enforcer::datapath::{DROP_PROGRAM, Datapath};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tests::lab::{Lab, Side};
use tests::tools::{self, Tool};

/// The method: at least 2 M packets, five paired rounds.
const DEFAULT_PACKETS: u64 = 2_000_000;
const DEFAULT_ROUNDS: usize = 5;
/// Rounds of the profile (the enforcer's extra split into its program and the rest).
const DEFAULT_PROFILE_ROUNDS: usize = 3;
/// Prefixes of each length: few short ones, most long ones, as in a routing table (40,000).
const PER_LENGTH: [(u8, usize); 16] = [
    (9, 4),
    (10, 8),
    (11, 16),
    (12, 32),
    (13, 64),
    (14, 128),
    (15, 256),
    (16, 1024),
    (17, 1024),
    (18, 1536),
    (19, 2048),
    (20, 3072),
    (21, 3072),
    (22, 6144),
    (23, 6144),
    (24, 15_428),
];
/// Distinct destinations in the flood (4,096 or more: one hot frame flatters every design).
const DESTINATIONS: usize = 8192;
/// Ethernet (14) + IPv4 (20) + UDP (8) + 18 bytes of payload; the FCS makes it 64 on a wire.
const FRAME_LEN: usize = 60;
const SEED: u64 = 16;
/// First octets that hold no never-block range (docs: built-in never-block list), none of the
/// labs' 198.18.0.0/15 and no reserved space (240/4).
const EXCLUDED_FIRST_OCTETS: [u8; 7] = [10, 100, 127, 169, 172, 192, 198];
const PLATFORM: &str = "flood";
/// Where the bench's section of BENCHMARKS.md starts and ends (other benches own the rest).
const SECTION_BEGIN: &str = "<!-- bench_flood: begin -->";
const SECTION_END: &str = "<!-- bench_flood: end -->";

struct Options {
    packets: u64,
    rounds: usize,
    /// Paired rounds of bare XDP_DROP and the enforcer with kernel.bpf_stats on (0: none).
    profile_rounds: usize,
    out: PathBuf,
}

fn options() -> Result<Options> {
    let mut options = Options {
        packets: DEFAULT_PACKETS,
        rounds: DEFAULT_ROUNDS,
        profile_rounds: DEFAULT_PROFILE_ROUNDS,
        out: Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or_else(|| anyhow!("the tests crate has no parent directory"))?
            .to_path_buf(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--packets" => {
                options.packets = value()?.parse().context("--packets: not a whole number")?;
            }
            "--rounds" => {
                options.rounds = value()?.parse().context("--rounds: not a whole number")?;
            }
            "--profile-rounds" => {
                options.profile_rounds = value()?
                    .parse()
                    .context("--profile-rounds: not a whole number")?;
            }
            "--out" => options.out = PathBuf::from(value()?),
            other => bail!(
                "unknown argument {other}: bench_flood [--packets N] [--rounds N] \
                 [--profile-rounds N] [--out DIR]"
            ),
        }
    }
    if options.packets == 0 || options.rounds == 0 {
        bail!("--packets and --rounds must be at least 1");
    }
    Ok(options)
}

/// A way of dropping the flood on the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    XdpDrop,
    Enforcer,
    Ipset(Backend),
    Nft,
}

/// The back end of iptables: its own tables, or rules in nf_tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Legacy,
    Nft,
}

impl Backend {
    fn tool(self) -> Tool {
        match self {
            Backend::Legacy => tools::IPTABLES_LEGACY,
            Backend::Nft => tools::IPTABLES_NFT,
        }
    }
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::XdpDrop => "bare XDP_DROP",
            Way::Enforcer => "enforcer",
            Way::Ipset(Backend::Legacy) => "iptables-legacy raw + ipset hash:net",
            Way::Ipset(Backend::Nft) => "iptables-nft raw + ipset hash:net",
            Way::Nft => "nftables netdev ingress, interval set",
        }
    }

    /// The key of this way in bench-flood.json.
    fn key(self) -> &'static str {
        match self {
            Way::XdpDrop => "xdp_drop",
            Way::Enforcer => "enforcer",
            Way::Ipset(Backend::Legacy) => "ipset_legacy",
            Way::Ipset(Backend::Nft) => "ipset_nft",
            Way::Nft => "nftables",
        }
    }
}

/// What the prefixes and the flood are made of.
struct Workload {
    prefixes: Vec<(Ipv4Addr, u8)>,
    destinations: Vec<Ipv4Addr>,
}

/// `PER_LENGTH` prefixes, none overlapping another, each in a /8 outside the excluded ones.
fn generate_prefixes(rng: &mut StdRng) -> Vec<(Ipv4Addr, u8)> {
    let first_octets: Vec<u32> = (1..=223u8)
        .filter(|o| !EXCLUDED_FIRST_OCTETS.contains(o))
        .map(u32::from)
        .collect();
    // Placed ranges, first address → last address.
    let mut taken: BTreeMap<u32, u32> = BTreeMap::new();
    let mut prefixes = Vec::new();
    for (len, count) in PER_LENGTH {
        let host_mask = u32::MAX >> len;
        let mut placed = 0;
        while placed < count {
            let octet = first_octets[rng.random_range(0..first_octets.len())];
            let start = ((octet << 24) | (rng.random::<u32>() & 0x00ff_ffff)) & !host_mask;
            let end = start | host_mask;
            // Ranges in `taken` do not overlap, so only the last one starting at or before
            // `end` can reach into [start, end].
            if taken
                .range(..=end)
                .next_back()
                .is_some_and(|(_, e)| *e >= start)
            {
                continue;
            }
            taken.insert(start, end);
            prefixes.push((Ipv4Addr::from(start), len));
            placed += 1;
        }
    }
    prefixes
}

/// `DESTINATIONS` distinct addresses, each in a prefix drawn at random.
fn generate_destinations(rng: &mut StdRng, prefixes: &[(Ipv4Addr, u8)]) -> Vec<Ipv4Addr> {
    let mut seen = HashSet::new();
    let mut destinations = Vec::with_capacity(DESTINATIONS);
    while destinations.len() < DESTINATIONS {
        let (network, len) = prefixes[rng.random_range(0..prefixes.len())];
        let address =
            Ipv4Addr::from(u32::from(network) | (rng.random::<u32>() & (u32::MAX >> len)));
        if seen.insert(address) {
            destinations.push(address);
        }
    }
    destinations
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A 60-byte Ethernet + IPv4 + UDP frame (UDP checksum 0: none, as IPv4 allows).
fn udp_frame(dst_mac: [u8; 6], src_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut frame = [0u8; FRAME_LEN];
    frame[0..6].copy_from_slice(&dst_mac);
    frame[6..12].copy_from_slice(&src_mac);
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (FRAME_LEN - 14) as u16;
    let ip = &mut frame[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let checksum = ipv4_checksum(ip);
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    let udp = &mut frame[34..42];
    udp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&5001u16.to_be_bytes());
    udp[4..6].copy_from_slice(&(ip_len - 20).to_be_bytes());
    frame
}

/// A trafgen configuration: one packet per destination, sent round robin.
fn trafgen_config(dst_mac: [u8; 6], src_mac: [u8; 6], destinations: &[Ipv4Addr]) -> String {
    let mut text = String::with_capacity(destinations.len() * FRAME_LEN * 5);
    for dst in destinations {
        let frame = udp_frame(dst_mac, src_mac, tests::lab::CLIENT_V4, *dst);
        text.push('{');
        for byte in frame {
            let _ = write!(text, " 0x{byte:02x},");
        }
        text.pop();
        text.push_str(" }\n");
    }
    text
}

fn parse_mac(text: &str) -> Result<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|part| u8::from_str_radix(part, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("not a MAC address: {text}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow!("not a MAC address: {text}"))
}

/// The JSON `ip -j -s link show dev DEV` prints, for one device.
fn link(lab: &Lab, side: Side, dev: &str) -> Result<serde_json::Value> {
    let text = lab.ip(side, &["-j", "-s", "link", "show", "dev", dev])?;
    let mut list: Vec<serde_json::Value> =
        serde_json::from_str(&text).with_context(|| format!("`ip -j link show {dev}`: {text}"))?;
    list.pop()
        .ok_or_else(|| anyhow!("`ip -j link show {dev}` listed nothing"))
}

fn mac_of(lab: &Lab, side: Side, dev: &str) -> Result<[u8; 6]> {
    let link = link(lab, side, dev)?;
    parse_mac(link["address"].as_str().unwrap_or_default())
}

fn tx_packets(lab: &Lab) -> Result<u64> {
    let link = link(lab, Side::Client, "c0")?;
    link["stats64"]["tx"]["packets"]
        .as_u64()
        .ok_or_else(|| anyhow!("no tx packet count for c0 in {link}"))
}

/// What the kernel accounted to a BPF program so far (kernel.bpf_stats: both stay 0 while the
/// statistics are off).
#[derive(Clone, Copy)]
struct ProgramRuns {
    ns: u64,
    count: u64,
}

/// The runs of the XDP program attached to g0 in the gateway, `None` when none is attached.
fn program_runs(lab: &Lab) -> Result<Option<ProgramRuns>> {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let text = lab.ip(Side::Gateway, &["-j", "-d", "link", "show", "dev", "g0"])?;
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&text).with_context(|| format!("`ip -j link show g0`: {text}"))?;
    let Some(id) = list
        .first()
        .and_then(|link| link["xdp"]["prog"]["id"].as_u64())
    else {
        return Ok(None);
    };
    let info = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|info| u64::from(info.id()) == id)
        .ok_or_else(|| anyhow!("program {id} attached to g0 is not among the loaded ones"))?;
    let fd = info.fd().context("opening the program attached to g0")?;
    let fd = fd.as_fd().as_raw_fd();
    let path = format!("/proc/self/fdinfo/{fd}");
    let fdinfo = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> Result<u64> {
        fdinfo
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .ok_or_else(|| anyhow!("no {name} in {path}"))?
            .trim()
            .parse()
            .with_context(|| format!("{name} in {path}"))
    };
    Ok(Some(ProgramRuns {
        ns: field("run_time_ns")?,
        count: field("run_cnt")?,
    }))
}

/// Busy CPU time so far (/proc/stat), in clock ticks: `[0]` the whole machine, then each CPU.
fn cpu_busy() -> Result<Vec<u64>> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    stat.lines()
        .filter(|l| l.starts_with("cpu"))
        .map(|line| {
            let fields: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .map(str::parse)
                .collect::<Result<_, _>>()
                .with_context(|| format!("/proc/stat: a field is not a number in {line}"))?;
            let field = |i: usize| fields.get(i).copied().unwrap_or(0);
            // user nice system idle iowait irq softirq steal guest guest_nice; user and nice
            // include guest and guest_nice.
            let (user, nice, system, irq, softirq, steal) =
                (field(0), field(1), field(2), field(5), field(6), field(7));
            let (guest, guest_nice) = (field(8), field(9));
            Ok(user.saturating_sub(guest)
                + nice.saturating_sub(guest_nice)
                + system
                + irq
                + softirq
                + steal)
        })
        .collect()
}

/// How much each entry of `cpu_busy` grew since `before`.
fn busy_since(before: &[u64]) -> Result<Vec<u64>> {
    let now = cpu_busy()?;
    Ok(now
        .iter()
        .zip(before)
        .map(|(now, before)| now.saturating_sub(*before))
        .collect())
}

fn tick_ns() -> Result<f64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        bail!("sysconf(_SC_CLK_TCK) failed");
    }
    Ok(1e9 / hz as f64)
}

/// One flood: the packets sent and the busy CPU per packet.
#[derive(Clone, Copy, Debug)]
struct Flood {
    packets: u64,
    /// The whole machine's busy CPU per packet (the method).
    ns_per_packet: f64,
    /// trafgen's own CPU time per packet (the veth's receive path runs in its context): none
    /// of the other work of a shared machine.
    task_ns_per_packet: f64,
    seconds: f64,
    /// The run time the kernel accounted to the XDP program on g0 per run over the flood
    /// (kernel.bpf_stats; `None` while the statistics are off or no program is attached).
    program_ns_per_packet: Option<f64>,
    /// Busy CPU of the machine just before, in CPUs (0.0 to the core count): other work that
    /// the whole machine's figure also carries.
    background_cpus: f64,
}

/// How long the machine's background load is sampled before each flood.
const BACKGROUND_SAMPLE: Duration = Duration::from_millis(300);

/// trafgen's words when the veth's ring is full and the send is refused (the receive path was
/// deferred to ksoftirqd and fell behind: happens on a loaded machine); the flood is run again.
const RING_FULL: &str = "Resource temporarily unavailable";
const FLOOD_TRIES: usize = 3;

fn flood(lab: &Lab, config: &Path, packets: u64) -> Result<Flood> {
    let mut tries = 1;
    loop {
        match flood_once(lab, config, packets) {
            Err(error) if tries < FLOOD_TRIES && format!("{error:#}").contains(RING_FULL) => {
                eprintln!("bench_flood: flood {tries} of {FLOOD_TRIES} refused ({error:#}); again");
                tries += 1;
            }
            result => return result,
        }
    }
}

fn flood_once(lab: &Lab, config: &Path, packets: u64) -> Result<Flood> {
    let tick = tick_ns()?;
    let start = cpu_busy()?;
    std::thread::sleep(BACKGROUND_SAMPLE);
    let background = busy_since(&start)?[0] as f64 * tick / BACKGROUND_SAMPLE.as_nanos() as f64;

    let trafgen = tools::path(tools::TRAFGEN)?;
    let sent_before = tx_packets(lab)?;
    let busy_before = cpu_busy()?;
    let began = Instant::now();
    // `ip netns exec` execs trafgen in place, so the child is trafgen itself.
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lab.netns(Side::Client)])
        .arg(&trafgen)
        .args(["--dev", "c0", "--conf"])
        .arg(config)
        .args(["--num", &packets.to_string()])
        // One process, no change to the machine's socket memory or IRQ affinity, no stats.
        .args([
            "--cpus",
            "1",
            "--no-sock-mem",
            "--notouch-irq",
            "--no-cpu-stats",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting trafgen")?;
    let (status, usage) = wait_with_usage(&child)?;
    let seconds = began.elapsed().as_secs_f64();
    let busy = busy_since(&busy_before)?;
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        bail!("trafgen failed ({status}): {}", stderr.trim());
    }
    // The kernel may send a stray packet of its own (IPv6 neighbour discovery) on c0.
    let sent = tx_packets(lab)? - sent_before;
    if sent < packets {
        bail!("trafgen was to send {packets} packets, c0 sent {sent}");
    }
    Ok(Flood {
        packets: sent,
        ns_per_packet: busy[0] as f64 * tick / sent as f64,
        task_ns_per_packet: usage.as_nanos() as f64 / sent as f64,
        seconds,
        background_cpus: background,
        program_ns_per_packet: None,
    })
}

/// Reaps `child` with wait4(2): its exit status and its own CPU time (user + system, which
/// includes the softirq work the kernel ran in its context: the veth's receive path).
fn wait_with_usage(child: &Child) -> Result<(ExitStatus, Duration)> {
    let pid = i32::try_from(child.id()).context("a child pid out of range")?;
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, which nothing else reaps; valid out pointers.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if rc != pid {
        bail!("wait4({pid}): {}", std::io::Error::last_os_error());
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Ok((
        ExitStatus::from_raw(status),
        time(usage.ru_utime) + time(usage.ru_stime),
    ))
}

/// A lab for one round: the topology, the flood's frames addressed to its gateway, threaded
/// NAPI checked off.
fn round_lab(workload: &Workload) -> Result<(Lab, PathBuf)> {
    let mut lab = Lab::new()?;
    // The flood arrives from the clients' side: the role a gateway gives that interface (the
    // enforcer then looks up destinations only; the other configurations have no such notion).
    lab.set_interfaces(&["g0:inside"]);
    let threaded = run_in(
        &lab,
        Side::Gateway,
        Command::new(tools::path(tools::CAT)?).arg("/sys/class/net/g0/threaded"),
    )?;
    if threaded.trim() != "0" {
        bail!(
            "threaded NAPI is on for g0 ({}): the flood would stall",
            threaded.trim()
        );
    }
    let config = trafgen_config(
        mac_of(&lab, Side::Gateway, "g0")?,
        mac_of(&lab, Side::Client, "c0")?,
        &workload.destinations,
    );
    let path = lab.dir().join("flood.cfg");
    std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
    Ok((lab, path))
}

/// `ip netns exec <netns of side> COMMAND`; fails with its stderr; returns stdout.
fn run_in(lab: &Lab, side: Side, command: &mut Command) -> Result<String> {
    run_in_with_input(lab, side, command, None)
}

fn run_in_with_input(
    lab: &Lab,
    side: Side,
    command: &mut Command,
    input: Option<&str>,
) -> Result<String> {
    let mut full = Command::new("ip");
    full.args(["netns", "exec", &lab.netns(side)])
        .arg(command.get_program())
        .args(command.get_args())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let line = format!("{:?}", full);
    let mut child = full.spawn().with_context(|| format!("starting {line}"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .with_context(|| format!("writing to {line}"))?;
    }
    let output = child
        .wait_with_output()
        .with_context(|| format!("running {line}"))?;
    if !output.status.success() {
        bail!(
            "{line} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A way of dropping in place on a lab's gateway; `dropped` reads its own count.
enum Installed {
    XdpDrop(Box<Datapath>),
    Enforcer,
    Ipset(Backend),
    Nft,
}

/// The policy of the enforcer: every prefix in one drop platform.
fn policy_yaml(prefixes: &[(Ipv4Addr, u8)]) -> String {
    let mut text = format!("platform: {PLATFORM}\naction: drop\nmatch:\n  - prefixes:\n");
    for (network, len) in prefixes {
        let _ = writeln!(text, "      - {network}/{len}");
    }
    text
}

fn install(lab: &mut Lab, way: Way, workload: &Workload) -> Result<Installed> {
    if lab.xdp_attached("g0")? {
        bail!(
            "an XDP program is still attached to g0 before {}",
            way.name()
        );
    }
    match way {
        Way::XdpDrop => {
            let datapath = lab.in_netns(Side::Gateway, || {
                let mut datapath = Datapath::load_unpinned()?;
                datapath.attach_program(DROP_PROGRAM, "g0")?;
                Ok(datapath)
            })?;
            Ok(Installed::XdpDrop(Box::new(datapath)))
        }
        Way::Enforcer => {
            let rules = lab.write_policy(&[("flood.yaml", &policy_yaml(&workload.prefixes))])?;
            lab.start_daemon(&rules)?;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let metrics = lab.metrics()?;
                let enforced = metrics.sum("enforcer_prefixes", &[("platform", PLATFORM)]);
                if enforced as usize >= workload.prefixes.len() {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "the daemon enforces {enforced} of {} prefixes after 60 s; its log:\n{}",
                        workload.prefixes.len(),
                        lab.daemon_log()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !lab.xdp_attached("g0")? {
                bail!("the daemon runs but attached nothing to g0");
            }
            Ok(Installed::Enforcer)
        }
        Way::Ipset(backend) => {
            let mut restore = format!(
                "create {PLATFORM} hash:net family inet hashsize 65536 maxelem {}\n",
                workload.prefixes.len().next_power_of_two()
            );
            for (network, len) in &workload.prefixes {
                let _ = writeln!(restore, "add {PLATFORM} {network}/{len}");
            }
            let ipset = tools::path(tools::IPSET)?;
            run_in_with_input(
                lab,
                Side::Gateway,
                Command::new(&ipset).arg("restore"),
                Some(&restore),
            )?;
            run_in(
                lab,
                Side::Gateway,
                Command::new(tools::path(backend.tool())?).args([
                    "-t",
                    "raw",
                    "-A",
                    "PREROUTING",
                    "-i",
                    "g0",
                    "-m",
                    "set",
                    "--match-set",
                    PLATFORM,
                    "dst",
                    "-j",
                    "DROP",
                ]),
            )?;
            Ok(Installed::Ipset(backend))
        }
        Way::Nft => {
            let mut elements = String::new();
            for (network, len) in &workload.prefixes {
                let _ = write!(elements, "{network}/{len}, ");
            }
            let script = format!(
                "table netdev {PLATFORM} {{\n  set dsts {{ type ipv4_addr; flags interval; \
                 elements = {{ {} }} }}\n  chain ingress {{ type filter hook ingress device \
                 \"g0\" priority 0; policy accept; ip daddr @dsts counter drop; }}\n}}\n",
                elements.trim_end_matches(", ")
            );
            run_in_with_input(
                lab,
                Side::Gateway,
                Command::new(tools::path(tools::NFT)?).args(["-f", "-"]),
                Some(&script),
            )?;
            Ok(Installed::Nft)
        }
    }
}

/// The packets the installed way counts as dropped so far; `None` for bare XDP_DROP, which
/// counts nothing.
fn dropped(lab: &Lab, installed: &Installed) -> Result<Option<u64>> {
    let count = match installed {
        Installed::XdpDrop(_) => return Ok(None),
        Installed::Enforcer => lab.metrics()?.sum(
            "enforcer_packets_total",
            &[("platform", PLATFORM), ("action", "drop")],
        ) as u64,
        Installed::Ipset(backend) => {
            let listing = run_in(
                lab,
                Side::Gateway,
                Command::new(tools::path(backend.tool())?).args([
                    "-t",
                    "raw",
                    "-L",
                    "PREROUTING",
                    "-n",
                    "-v",
                    "-x",
                ]),
            )?;
            let rule = listing
                .lines()
                .find(|l| l.contains("match-set"))
                .ok_or_else(|| anyhow!("no ipset rule in raw PREROUTING:\n{listing}"))?;
            rule.split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| anyhow!("no packet count in {rule}"))?
        }
        Installed::Nft => {
            let listing = run_in(
                lab,
                Side::Gateway,
                Command::new(tools::path(tools::NFT)?)
                    .args(["list", "chain", "netdev", PLATFORM, "ingress"]),
            )?;
            let after = listing
                .split_once("counter packets ")
                .map(|(_, rest)| rest)
                .ok_or_else(|| anyhow!("no counter in the ingress chain:\n{listing}"))?;
            after
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| anyhow!("no packet count in the ingress chain:\n{listing}"))?
        }
    };
    Ok(Some(count))
}

fn remove(lab: &mut Lab, installed: Installed) -> Result<()> {
    match installed {
        Installed::XdpDrop(datapath) => drop(datapath),
        Installed::Enforcer => {
            lab.stop_daemon()?;
            // The daemon leaves its program attached when it stops (fail-static).
            let bpffs = lab.bpffs().display().to_string();
            let output = lab.enforcer(&["detach", "--all", "--bpffs", &bpffs])?;
            if !output.status.success() {
                bail!(
                    "enforcer detach --all: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
        // The lab's gateway namespace goes, and its tables and sets with it.
        Installed::Ipset(_) | Installed::Nft => {}
    }
    Ok(())
}

/// Installs `way`, floods, checks that `way` itself dropped every packet, removes it.
fn measure(
    lab: &mut Lab,
    config: &Path,
    way: Way,
    options: &Options,
    workload: &Workload,
) -> Result<Flood> {
    let installed = install(lab, way, workload)?;
    let before = dropped(lab, &installed)?;
    let runs_before = program_runs(lab)?;
    let result = flood(lab, config, options.packets);
    let runs_after = program_runs(lab)?;
    let after = dropped(lab, &installed)?;
    remove(lab, installed)?;
    let mut flood = result?;
    if let (Some(before), Some(after)) = (runs_before, runs_after)
        && after.count > before.count
    {
        flood.program_ns_per_packet =
            Some((after.ns - before.ns) as f64 / (after.count - before.count) as f64);
    }
    if let (Some(before), Some(after)) = (before, after) {
        let counted = after - before;
        if counted < options.packets {
            bail!(
                "{} counted {counted} dropped packets of {} sent: the rest went elsewhere",
                way.name(),
                flood.packets
            );
        }
    }
    Ok(flood)
}

/// One paired round of a configuration: bare XDP_DROP, then the configuration.
struct Pair {
    floor: Flood,
    way: Flood,
}

impl Pair {
    /// Extra busy CPU per packet over bare XDP_DROP, the whole machine.
    fn extra(&self) -> f64 {
        self.way.ns_per_packet - self.floor.ns_per_packet
    }

    /// The same in trafgen's own CPU time.
    fn task_extra(&self) -> f64 {
        self.way.task_ns_per_packet - self.floor.task_ns_per_packet
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The configurations to compare: iptables through each back end that is installed.
fn ways() -> Result<Vec<Way>> {
    for tool in [tools::TRAFGEN, tools::IPSET, tools::NFT] {
        tools::path(tool)?;
    }
    let mut ways = vec![Way::Enforcer];
    for backend in [Backend::Legacy, Backend::Nft] {
        if tools::path(backend.tool()).is_ok() {
            ways.push(Way::Ipset(backend));
        }
    }
    if ways.len() == 1 {
        tools::path(tools::IPTABLES_LEGACY)?;
    }
    ways.push(Way::Nft);
    Ok(ways)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let rest = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest / 60 % 60
    )
}

struct Machine {
    cpu: String,
    cores: usize,
    kernel: String,
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, model)| model.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    Machine { cpu, cores, kernel }
}

/// Per configuration, its rounds.
type Results = Vec<(Way, Vec<Pair>)>;

/// The median extra cost of `way` by `extra` (`Pair::extra` or `Pair::task_extra`).
fn median_extra(results: &Results, way: Way, extra: fn(&Pair) -> f64) -> Option<f64> {
    results
        .iter()
        .find(|(w, _)| *w == way)
        .map(|(_, pairs)| median(pairs.iter().map(extra).collect()))
}

/// A ratio the issue sets a goal for: the enforcer's extra cost over another way's.
struct Ratio {
    label: String,
    key: String,
    /// Whole machine; the flood's CPU alone.
    value: f64,
    task_value: f64,
    goal: f64,
}

fn ratios(results: &Results) -> Vec<Ratio> {
    let mut out = Vec::new();
    for (way, _) in results {
        let goal = match way {
            Way::Ipset(_) => 1.0 / 3.0,
            Way::Nft => 1.0 / 5.0,
            _ => continue,
        };
        let of = |extra: fn(&Pair) -> f64| {
            Some(median_extra(results, Way::Enforcer, extra)? / median_extra(results, *way, extra)?)
        };
        if let (Some(value), Some(task_value)) = (of(Pair::extra), of(Pair::task_extra)) {
            out.push(Ratio {
                label: format!("enforcer / {}", way.name()),
                key: format!("enforcer_over_{}", way.key()),
                value,
                task_value,
                goal,
            });
        }
    }
    out
}

fn table(results: &Results) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "| configuration | ns/packet | bare XDP_DROP | extra over XDP_DROP | extra, min..max | extra, trafgen's CPU time |"
    );
    let _ = writeln!(text, "|---|---:|---:|---:|---:|---:|");
    for (way, pairs) in results {
        let extras: Vec<f64> = pairs.iter().map(Pair::extra).collect();
        let min = extras.iter().copied().fold(f64::INFINITY, f64::min);
        let max = extras.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let _ = writeln!(
            text,
            "| {} | {:.0} | {:.0} | {:+.0} | {:+.0}..{:+.0} | {:+.0} |",
            way.name(),
            median(pairs.iter().map(|p| p.way.ns_per_packet).collect()),
            median(pairs.iter().map(|p| p.floor.ns_per_packet).collect()),
            median(extras),
            min,
            max,
            median(pairs.iter().map(Pair::task_extra).collect()),
        );
    }
    text.push('\n');
    let _ = writeln!(
        text,
        "| ratio of the extra costs | whole machine | trafgen's CPU time | goal (issue 16) |"
    );
    let _ = writeln!(text, "|---|---:|---:|---:|");
    for ratio in ratios(results) {
        let verdict = if ratio.value <= ratio.goal {
            "met"
        } else {
            "missed"
        };
        let _ = writeln!(
            text,
            "| {} | {:.2} | {:.2} | at most {:.2}: {verdict} |",
            ratio.label, ratio.value, ratio.task_value, ratio.goal
        );
    }
    text
}

fn section(
    options: &Options,
    results: &Results,
    profile: &[ProfileRound],
    machine: &Machine,
    date: &str,
) -> String {
    let background = median(
        results
            .iter()
            .flat_map(|(_, pairs)| {
                pairs
                    .iter()
                    .flat_map(|p| [p.floor.background_cpus, p.way.background_cpus])
            })
            .collect(),
    );
    format!(
        "{SECTION_BEGIN}\n## Head to head: CPU per dropped packet (bench_flood)\n\n\
         Machine: {} ({} cores), kernel {}, {date}.\n\n\
         Method: {} packets of 64-byte UDP frames (60 bytes + FCS) flooded by trafgen from a \
         client namespace into the gateway's veth, threaded NAPI off; the whole machine's busy \
         CPU from /proc/stat (user+nice+system+irq+softirq+steal, guest excluded) over the flood, \
         divided by the packets sent. The columns marked trafgen's CPU time count instead \
         the sending process's own CPU time (wait4: user + system, which with tick accounting \
         includes the softirq work run in its context, the veth's receive path and every \
         drop): blind to other work on a shared machine, blind too to work deferred to \
         ksoftirqd. {} paired rounds per configuration, each in a fresh lab: \
         bare XDP_DROP, then the configuration; medians of the per-round differences. Every \
         configuration drops on the same {} non-overlapping IPv4 prefixes of 16 lengths (/9 to \
         /24) spread over the space; the frames go to {} distinct destinations in those \
         prefixes, and each configuration's own counter accounted for every packet sent. Other \
         work on the machine just before the floods: {:.2} CPUs busy (median).\n\n{}\n\
         {}\
         Reproduce: `cargo xtask bench` (or `target/release/bench_flood [--packets N] \
         [--rounds N] [--profile-rounds N]` as root after a release build); raw figures in \
         bench-flood.json.\n\
         {SECTION_END}\n",
        machine.cpu,
        machine.cores,
        machine.kernel,
        options.packets,
        options.rounds,
        PER_LENGTH.iter().map(|(_, n)| n).sum::<usize>(),
        DESTINATIONS,
        background,
        table(results),
        profile_section(profile),
    )
}

fn profile_section(profile: &[ProfileRound]) -> String {
    if profile.is_empty() {
        return String::new();
    }
    format!(
        "### Where the enforcer's extra goes\n\n\
         {} more rounds, each a fresh lab flooded three times with the kernel's BPF run-time \
         statistics on (kernel.bpf_stats: the run time the kernel accounts to the program \
         attached to g0, divided by its runs): bare XDP_DROP; the enforcer with the \
         destinations' /8s as its only prefixes (every lookup ends at its index entry: no range \
         searched); the enforcer with the 40,000 prefixes (the range search on top). The statistics add two clock reads to every run, so these rounds are kept \
         apart from the table above. Medians over the rounds, and of the per-round differences \
         (min..max).\n\n{}\n",
        profile.len(),
        profile_table(profile)
    )
}

/// Replaces the bench's section of BENCHMARKS.md (or appends it; or creates the file).
fn write_benchmarks(path: &Path, section: &str) -> Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n".to_string(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let new = match (old.find(SECTION_BEGIN), old.find(SECTION_END)) {
        (Some(begin), Some(end)) if begin < end => format!(
            "{}{section}{}",
            &old[..begin],
            old[end + SECTION_END.len()..].trim_start_matches('\n')
        ),
        _ => format!(
            "{}\n{section}",
            old.trim_end_matches('\n').to_string() + "\n"
        ),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

fn json(
    options: &Options,
    results: &Results,
    profile: &[ProfileRound],
    machine: &Machine,
    date: &str,
) -> serde_json::Value {
    let flood = |f: &Flood| {
        serde_json::json!({
            "packets": f.packets,
            "ns_per_packet": f.ns_per_packet,
            "flood_task_ns_per_packet": f.task_ns_per_packet,
            "seconds": f.seconds,
            "background_cpus": f.background_cpus,
            "program_ns_per_packet": f.program_ns_per_packet,
        })
    };
    let configurations: serde_json::Map<String, serde_json::Value> = results
        .iter()
        .map(|(way, pairs)| {
            let value = serde_json::json!({
                "name": way.name(),
                "extra_ns_median": median(pairs.iter().map(Pair::extra).collect()),
                "flood_task_extra_ns_median": median(pairs.iter().map(Pair::task_extra).collect()),
                "ns_per_packet_median": median(pairs.iter().map(|p| p.way.ns_per_packet).collect()),
                "xdp_drop_ns_per_packet_median": median(pairs.iter().map(|p| p.floor.ns_per_packet).collect()),
                "rounds": pairs.iter().map(|p| serde_json::json!({
                    "xdp_drop": flood(&p.floor),
                    "configuration": flood(&p.way),
                    "extra_ns": p.extra(),
                    "flood_task_extra_ns": p.task_extra(),
                })).collect::<Vec<_>>(),
            });
            (way.key().to_string(), value)
        })
        .collect();
    let ratios: serde_json::Map<String, serde_json::Value> = ratios(results)
        .into_iter()
        .map(|r| {
            let value = serde_json::json!({
                "value": r.value,
                "flood_task_value": r.task_value,
                "goal_at_most": r.goal,
            });
            (r.key, value)
        })
        .collect();
    serde_json::json!({
        "date": date,
        "machine": { "cpu": machine.cpu, "cores": machine.cores, "kernel": machine.kernel },
        "method": {
            "packets": options.packets,
            "rounds": options.rounds,
            "frame_bytes": FRAME_LEN + 4,
            "prefixes": PER_LENGTH.iter().map(|(_, n)| n).sum::<usize>(),
            "prefix_lengths": PER_LENGTH.iter().map(|(l, _)| l).collect::<Vec<_>>(),
            "destinations": DESTINATIONS,
            "busy": "user+nice+system+irq+softirq+steal of all CPUs, guest excluded",
        },
        "configurations": configurations,
        "ratios": ratios,
        "profile": profile.iter().map(|r| serde_json::json!({
            "xdp_drop": flood(&r.floor),
            "enforcer_covering_slash8": flood(&r.covering),
            "enforcer": flood(&r.enforcer),
        })).collect::<Vec<_>>(),
    })
}

/// One round of the profile: three floods of one lab with the kernel's BPF run-time statistics on.
struct ProfileRound {
    floor: Flood,
    /// The enforcer with the destinations' /8s as its prefixes: every lookup ends at its index
    /// entry (the program's work without a range search).
    covering: Flood,
    /// The enforcer with the workload's prefixes, as in the head to head.
    enforcer: Flood,
}

/// The workload's /8s as prefixes (the same destinations, all inside them).
fn covering_workload(workload: &Workload) -> Workload {
    let mut octets: Vec<u8> = workload
        .prefixes
        .iter()
        .map(|(n, _)| n.octets()[0])
        .collect();
    octets.sort_unstable();
    octets.dedup();
    Workload {
        prefixes: octets
            .into_iter()
            .map(|o| (Ipv4Addr::new(o, 0, 0, 0), 8))
            .collect(),
        destinations: workload.destinations.clone(),
    }
}

/// Rounds of bare XDP_DROP, the enforcer on covering /8s and the enforcer on the workload's
/// prefixes, with the kernel's BPF run-time statistics on: how much of the enforcer's extra cost
/// is its program's own run time, how much of that its table's lookups, and how much is spent
/// around the program. The statistics add two clock reads to every run, so these floods are
/// kept apart from the head-to-head rounds.
fn profile(options: &Options, workload: &Workload) -> Result<Vec<ProfileRound>> {
    if options.profile_rounds == 0 {
        return Ok(Vec::new());
    }
    let covering = covering_workload(workload);
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("turning the kernel's BPF run-time statistics on")?;
    let mut rounds = Vec::new();
    for round in 1..=options.profile_rounds {
        let (mut lab, config) = round_lab(workload)?;
        let mut flood = |way: Way, workload: &Workload, what: &str| {
            let flood = measure(&mut lab, &config, way, options, workload)
                .with_context(|| format!("profile round {round}, {what}"))?;
            if flood.program_ns_per_packet.is_none() {
                bail!("profile round {round}, {what}: the kernel accounted no program run time");
            }
            Ok(flood)
        };
        let profiled = ProfileRound {
            floor: flood(Way::XdpDrop, workload, "bare XDP_DROP")?,
            covering: flood(Way::Enforcer, &covering, "enforcer on covering /8s")?,
            enforcer: flood(Way::Enforcer, workload, "enforcer")?,
        };
        println!(
            "profile round {round}: in the program XDP_DROP {:.0}, enforcer on /8s {:.0}, enforcer {:.0} ns/packet; whole machine {:.0}, {:.0}, {:.0}",
            program_ns(&profiled.floor),
            program_ns(&profiled.covering),
            program_ns(&profiled.enforcer),
            profiled.floor.ns_per_packet,
            profiled.covering.ns_per_packet,
            profiled.enforcer.ns_per_packet,
        );
        rounds.push(profiled);
    }
    Ok(rounds)
}

/// A figure of a flood, per packet.
type Measure = fn(&Flood) -> f64;

fn program_ns(flood: &Flood) -> f64 {
    flood.program_ns_per_packet.unwrap_or(f64::NAN)
}

/// The median of `of` over the rounds, and the median, min and max of its per-round differences
/// `later - earlier`.
fn split(
    rounds: &[ProfileRound],
    of: Measure,
    earlier: fn(&ProfileRound) -> &Flood,
    later: fn(&ProfileRound) -> &Flood,
) -> String {
    let differences: Vec<f64> = rounds
        .iter()
        .map(|r| of(later(r)) - of(earlier(r)))
        .collect();
    let min = differences.iter().copied().fold(f64::INFINITY, f64::min);
    let max = differences
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    format!("{:+.0} ({min:+.0}..{max:+.0})", median(differences))
}

/// The profile's split: whole machine, in the program, around it; medians over the rounds.
fn profile_table(rounds: &[ProfileRound]) -> String {
    if rounds.is_empty() {
        return String::new();
    }
    let rows: [(&str, Measure); 3] = [
        ("whole machine, busy CPU per packet", |f| f.ns_per_packet),
        ("in the XDP program (its run time per run)", program_ns),
        ("around the program (the rest)", |f| {
            f.ns_per_packet - program_ns(f)
        }),
    ];
    let mut text = String::from(
        "| ns per packet | bare XDP_DROP | enforcer, /8s | enforcer | enforcer, /8s − XDP_DROP | \
         enforcer − enforcer, /8s |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for (label, of) in rows {
        let column = |flood: fn(&ProfileRound) -> &Flood| {
            median(rounds.iter().map(|r| of(flood(r))).collect())
        };
        let _ = writeln!(
            text,
            "| {label} | {:.0} | {:.0} | {:.0} | {} | {} |",
            column(|r| &r.floor),
            column(|r| &r.covering),
            column(|r| &r.enforcer),
            split(rounds, of, |r| &r.floor, |r| &r.covering),
            split(rounds, of, |r| &r.covering, |r| &r.enforcer),
        );
    }
    text
}

fn main() -> Result<()> {
    let options = options()?;
    if !tests::lab::is_root() {
        bail!("bench_flood needs root (namespaces, XDP, netfilter)");
    }
    let ways = ways()?;
    let mut rng = StdRng::seed_from_u64(SEED);
    let prefixes = generate_prefixes(&mut rng);
    let destinations = generate_destinations(&mut rng, &prefixes);
    let workload = Workload {
        prefixes,
        destinations,
    };
    println!(
        "bench_flood: {} prefixes, {} destinations, {} packets a flood, {} rounds of {}",
        workload.prefixes.len(),
        workload.destinations.len(),
        options.packets,
        options.rounds,
        ways.iter().map(|w| w.name()).collect::<Vec<_>>().join(", ")
    );
    let mut results: Results = ways.iter().map(|w| (*w, Vec::new())).collect();
    for round in 1..=options.rounds {
        for (way, pairs) in &mut results {
            let (mut lab, config) = round_lab(&workload)?;
            let floor = measure(&mut lab, &config, Way::XdpDrop, &options, &workload)
                .with_context(|| format!("round {round}, bare XDP_DROP before {}", way.name()))?;
            let measured = measure(&mut lab, &config, *way, &options, &workload)
                .with_context(|| format!("round {round}, {}", way.name()))?;
            let pair = Pair {
                floor,
                way: measured,
            };
            println!(
                "round {round}: {:<40} {:>6.0} ns/packet, XDP_DROP {:>6.0}, extra {:>+6.0} ns (trafgen's CPU {:>6.0} - {:>6.0} = {:>+6.0}; {:.1} s, background {:.2} CPUs)",
                way.name(),
                pair.way.ns_per_packet,
                pair.floor.ns_per_packet,
                pair.extra(),
                pair.way.task_ns_per_packet,
                pair.floor.task_ns_per_packet,
                pair.task_extra(),
                pair.way.seconds,
                pair.way.background_cpus
            );
            pairs.push(pair);
        }
    }
    let profile = profile(&options, &workload)?;
    let machine = machine();
    let date = utc_now();
    let table = table(&results);
    println!("\n{table}\n{}", profile_table(&profile));
    write_benchmarks(
        &options.out.join("BENCHMARKS.md"),
        &section(&options, &results, &profile, &machine, &date),
    )?;
    let json_path = options.out.join("bench-flood.json");
    let text = serde_json::to_string_pretty(&json(&options, &results, &profile, &machine, &date))?;
    std::fs::write(&json_path, text + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!(
        "wrote {} and {}",
        options.out.join("BENCHMARKS.md").display(),
        json_path.display()
    );
    Ok(())
}

#[cfg(test)]
mod unit {
    use super::*;
    use enforcer::never_block::NeverBlock;
    use ipnet::{IpNet, Ipv4Net};

    fn workload() -> Workload {
        let mut rng = StdRng::seed_from_u64(SEED);
        let prefixes = generate_prefixes(&mut rng);
        let destinations = generate_destinations(&mut rng, &prefixes);
        Workload {
            prefixes,
            destinations,
        }
    }

    fn net((network, len): (Ipv4Addr, u8)) -> Ipv4Net {
        Ipv4Net::new(network, len).unwrap()
    }

    /// The prefixes are what every configuration is given: 40,000 of 16 lengths, none
    /// overlapping another (an nftables interval set refuses overlaps), none the enforcer may
    /// not block, none in the labs' own 198.18.0.0/15.
    #[test]
    fn prefixes_are_disjoint_blockable_and_of_sixteen_lengths() {
        let prefixes = workload().prefixes;
        assert_eq!(prefixes.len(), 40_000);
        let lengths: HashSet<u8> = prefixes.iter().map(|(_, len)| *len).collect();
        assert_eq!(lengths.len(), 16, "{lengths:?}");
        let mut ranges: Vec<(u32, u32)> = prefixes
            .iter()
            .map(|p| {
                let n = net(*p);
                assert_eq!(n.trunc(), n, "{n} has host bits set");
                (u32::from(n.network()), u32::from(n.broadcast()))
            })
            .collect();
        ranges.sort();
        for pair in ranges.windows(2) {
            assert!(
                pair[0].1 < pair[1].0,
                "{} overlaps {}",
                Ipv4Addr::from(pair[0].0),
                Ipv4Addr::from(pair[1].0)
            );
        }
        let never = NeverBlock::builtin();
        let lab_space: Ipv4Net = "198.18.0.0/15".parse().unwrap();
        for p in &prefixes {
            let n = net(*p);
            assert!(
                never.overlaps(&IpNet::V4(n)).is_empty(),
                "{n} is never-block"
            );
            assert!(
                !lab_space.contains(&n) && !n.contains(&lab_space),
                "{n} is the labs'"
            );
        }
    }

    /// The flood reaches 8,192 distinct destinations, each inside a prefix, over many prefixes.
    #[test]
    fn covering_prefixes_are_slash_8s_holding_every_destination() {
        let workload = workload();
        let covering = covering_workload(&workload);
        assert!(covering.prefixes.len() > 100, "{}", covering.prefixes.len());
        assert!(
            covering
                .prefixes
                .iter()
                .all(|(n, len)| *len == 8 && n.octets()[1..] == [0, 0, 0])
        );
        for d in &covering.destinations {
            assert!(
                covering
                    .prefixes
                    .iter()
                    .any(|(n, _)| n.octets()[0] == d.octets()[0]),
                "{d}"
            );
        }
        assert_eq!(covering.destinations, workload.destinations);
    }

    #[test]
    fn destinations_are_distinct_and_inside_the_prefixes() {
        let Workload {
            prefixes,
            destinations,
        } = workload();
        let distinct: HashSet<&Ipv4Addr> = destinations.iter().collect();
        assert_eq!(distinct.len(), DESTINATIONS);
        // First address → last address of each prefix (they do not overlap).
        let ranges: BTreeMap<u32, u32> = prefixes
            .iter()
            .map(|p| {
                let n = net(*p);
                (u32::from(n.network()), u32::from(n.broadcast()))
            })
            .collect();
        let mut hit = HashSet::new();
        for dst in &destinations {
            let address = u32::from(*dst);
            let holder = ranges.range(..=address).next_back();
            assert!(
                holder.is_some_and(|(_, end)| address <= *end),
                "{dst} is in no prefix"
            );
            hit.insert(holder);
        }
        assert!(hit.len() >= 4096, "only {} prefixes reached", hit.len());
    }

    /// A frame a receiving IP stack accepts: 60 bytes, the gateway's MAC, a valid IPv4 header
    /// checksum (ip_rcv drops a bad one before any netfilter hook sees it), UDP to the address.
    #[test]
    fn frames_are_valid_udp_to_the_destination() {
        let dst = Ipv4Addr::new(1, 2, 3, 4);
        let frame = udp_frame(
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            ::tests::lab::CLIENT_V4,
            dst,
        );
        assert_eq!(frame.len() + 4, 64);
        assert_eq!(frame[0..6], [2, 0, 0, 0, 0, 1]);
        assert_eq!(frame[12..14], [0x08, 0x00]);
        assert_eq!(
            ipv4_checksum(&frame[14..34]),
            0,
            "header checksum does not verify"
        );
        assert_eq!(frame[23], 17);
        assert_eq!(frame[30..34], dst.octets());
        assert_eq!(
            u16::from_be_bytes([frame[16], frame[17]]) as usize,
            FRAME_LEN - 14
        );
        let config = trafgen_config([0; 6], [0; 6], &[dst, Ipv4Addr::new(5, 6, 7, 8)]);
        assert_eq!(config.lines().count(), 2);
        assert!(config.lines().all(|l| l.matches("0x").count() == FRAME_LEN));
    }

    /// Only the bench's own section of BENCHMARKS.md is replaced; the rest stays.
    #[test]
    fn benchmarks_section_is_replaced_in_place() {
        let dir = std::env::temp_dir().join(format!("bench-flood-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("BENCHMARKS.md");
        let section = |n: u32| format!("{SECTION_BEGIN}\nrun {n}\n{SECTION_END}\n");
        write_benchmarks(&path, &section(1)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}\n## Other bench\nkept\n")).unwrap();
        write_benchmarks(&path, &section(2)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(text.starts_with("# Benchmarks\n"), "{text}");
        assert!(text.contains("run 2") && !text.contains("run 1"), "{text}");
        assert!(text.contains("## Other bench\nkept\n"), "{text}");
        assert_eq!(text.matches(SECTION_BEGIN).count(), 1, "{text}");
    }
}
