//! `cargo xtask demo`: a walkthrough an operator follows once. A client, a gateway running the
//! real enforcer, and a server holding a few "internet" hosts and a DNS server, each in its own
//! network namespace. Numbered steps show the policy, flows blocked and delivered, names blocked
//! by name at the gateway, a `rules add` taking effect live, the daemon's own view and the
//! metrics that moved; then everything is removed. Every expectation is checked: the demo exits
//! non-zero, listing the failures, if anything did not do what the policy says.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{ExitCode, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use enforcer::report::clock::format_utc_seconds;
use hickory_proto::op::Message;
use hickory_proto::rr::RData;
use tests::dns::{Dnsmasq, Zone};
use tests::lab::{
    self, CLIENT_V4, Connect, INTERNET_V4, INTERNET_V6, Lab, Metrics, SERVER_V4, Server, Side,
};

/// Hosts the demo's DNS server names, on the server's loopback (routed like the others).
const ZOOM: Ipv4Addr = Ipv4Addr::new(198, 19, 50, 5);
const LEARNED: Ipv4Addr = Ipv4Addr::new(198, 19, 60, 5);
const DOMESTIC: Ipv4Addr = Ipv4Addr::new(198, 19, 70, 5);
/// meet.google.com in the lab: a shared front end, blocked by name only.
const FRONT_END: Ipv4Addr = Ipv4Addr::new(198, 19, 80, 5);
/// use-application-dns.net in the lab (Firefox's canary; nothing listens there).
const CANARY: Ipv4Addr = Ipv4Addr::new(198, 19, 80, 6);

/// The destination no rule covers until step 7 bans its prefixes with `rules add`.
const LIVE_PREFIXES: [&str; 2] = ["198.19.40.0/24", "2001:db8:40::/48"];

const DATAGRAMS: usize = 10;

const BLOCKED: &str = "BLOCKED";
const DELIVERED: &str = "DELIVERED";
/// What a client's lookup gets when the gateway answers it itself.
const GATEWAY_NXDOMAIN: &str = "NXDOMAIN from the gateway";

const POLICY: &[(&str, &str)] = &[
    (
        "zoom-media.yaml",
        "\
platform: zoom-media
description: meeting media servers (test addresses stand in for the published ranges)
action: drop
match:
  - prefixes: [198.19.10.0/24, \"2001:db8:10::/48\"]
",
    ),
    (
        "zoom-support.yaml",
        "\
platform: zoom-support
description: the support site inside the media range stays reachable
action: allow
match:
  - prefixes: [198.19.10.77/32, \"2001:db8:10::77/128\"]
",
    ),
    (
        "meet-relays.yaml",
        "\
platform: meet-relays
description: TURN relays, banned on their UDP relay ports only
action: drop
match:
  - prefixes: [198.19.20.0/24, \"2001:db8:20::/48\"]
    protocol: udp
    ports: [3478, 19302-19309]
",
    ),
    (
        "media-lab.yaml",
        "\
platform: media-lab
description: names learned from the clients' lookups (their answers must cross the gateway)
action: drop
match:
  - domains: [\"*.media.example\"]
    enforce: address
",
    ),
    (
        "watched-lab.yaml",
        "\
platform: watched-lab
description: watched, not blocked
action: monitor
match:
  - prefixes: [198.19.30.0/24, \"2001:db8:30::/48\"]
",
    ),
];

/// Numbered steps, and every expectation checked along the way.
#[derive(Default)]
struct Walkthrough {
    step: usize,
    checks: usize,
    failures: Vec<String>,
    /// The step of each failure.
    failed_steps: Vec<usize>,
}

impl Walkthrough {
    fn step(&mut self, title: &str, why: &str) {
        self.step += 1;
        println!("\n{}. {title}", self.step);
        for line in why.lines() {
            println!("   {line}");
        }
    }

    /// Records one expectation; returns the mark for its table row.
    fn check(&mut self, what: &str, expected: &str, observed: &str) -> &'static str {
        self.checks += 1;
        if expected == observed {
            "ok"
        } else {
            self.failures.push(format!(
                "step {}: {what}: expected {expected}, observed {observed}",
                self.step
            ));
            self.failed_steps.push(self.step);
            "UNEXPECTED"
        }
    }

    fn failed_in(&self, step: usize) -> bool {
        self.failed_steps.contains(&step)
    }
}

/// A table whose columns are as wide as their widest cell.
struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(head: &[&str]) -> Table {
        Table {
            rows: vec![head.iter().map(|h| h.to_string()).collect()],
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn print(&self) {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &self.rows {
            let mut line = String::from("   ");
            for (cell, &width) in row.iter().zip(&widths) {
                line.push_str(&format!("{cell:<width$}  "));
            }
            println!("{}", line.trim_end());
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }
}

/// A name the client looks up: its rule, what the lookup should get, and the address to
/// connect to afterwards with the outcome expected.
type NameCase = (
    &'static str,
    &'static str,
    String,
    Option<(Ipv4Addr, &'static str)>,
);

struct Flow {
    proto: Proto,
    dst: SocketAddr,
    rule: &'static str,
    blocked: bool,
}

fn flows() -> Vec<Flow> {
    let mut flows = Vec::new();
    let families = [
        INTERNET_V4.map(IpAddr::V4).to_vec(),
        INTERNET_V6.map(IpAddr::V6).to_vec(),
    ];
    for hosts in families {
        let (media, support, relay, watched, other) =
            (hosts[0], hosts[1], hosts[2], hosts[3], hosts[4]);
        let at = SocketAddr::new;
        for (proto, dst, rule, blocked) in [
            (
                Proto::Udp,
                at(media, 8801),
                "zoom-media: drop, the whole prefix",
                true,
            ),
            (
                Proto::Tcp,
                at(media, 443),
                "zoom-media: drop, the whole prefix",
                true,
            ),
            (
                Proto::Udp,
                at(support, 443),
                "zoom-support: allow, an exception inside zoom-media",
                false,
            ),
            (
                Proto::Tcp,
                at(support, 443),
                "zoom-support: allow, an exception inside zoom-media",
                false,
            ),
            (
                Proto::Udp,
                at(relay, 3478),
                "meet-relays: drop udp/3478",
                true,
            ),
            (
                Proto::Udp,
                at(relay, 19305),
                "meet-relays: drop udp/19302-19309",
                true,
            ),
            (
                Proto::Udp,
                at(relay, 3479),
                "meet-relays: port not listed",
                false,
            ),
            (
                Proto::Tcp,
                at(relay, 3478),
                "meet-relays: udp only, tcp passes",
                false,
            ),
            (
                Proto::Udp,
                at(watched, 443),
                "watched-lab: monitor (counted, passed)",
                false,
            ),
            (
                Proto::Tcp,
                at(watched, 443),
                "watched-lab: monitor (counted, passed)",
                false,
            ),
            (Proto::Udp, at(other, 443), "no rule", false),
            (Proto::Tcp, at(other, 443), "no rule", false),
        ] {
            flows.push(Flow {
                proto,
                dst,
                rule,
                blocked,
            });
        }
    }
    flows
}

/// dnsmasq beyond the gateway (port 53 of the server), answering for every name the demo uses,
/// the banned ones included: whatever the client does not get comes from the gateway.
fn start_dns(lab: &Lab) -> Result<Dnsmasq> {
    let zone = Zone::new().local("#").local_ttl(300).hosts_file(format!(
        "{ZOOM} zoom.us\n{LEARNED} live.media.example\n{DOMESTIC} www.domestic.example\n\
         {FRONT_END} meet.google.com\n{CANARY} use-application-dns.net\n"
    ));
    Dnsmasq::start_in(
        &lab.netns_path(Side::Server),
        &[IpAddr::V4(SERVER_V4)],
        Some(53),
        &zone,
    )
}

/// The client asks the lab's DNS server for `name` (A, with EDNS), like a stub resolver, and
/// says what came back: an address, the gateway's NXDOMAIN (its Extended DNS Error 15,
/// Blocked, tells it apart), another RCODE, or nothing.
fn lookup(lab: &Lab, name: &str) -> Result<String> {
    let mut query = tests::dns::query_packet(rand::random(), name, 1);
    // One OPT record (EDNS, 4096-byte payload): the gateway then adds EDE 15.
    query[11] = 1;
    query.extend([0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    lab.in_netns(Side::Client, move || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        socket.send_to(&query, (SERVER_V4, 53))?;
        let mut buf = [0u8; 4096];
        let Ok((n, _)) = socket.recv_from(&mut buf) else {
            return Ok("no answer".to_string());
        };
        let reply = &buf[..n];
        let rcode = reply.get(3).map_or(0xFF, |b| b & 0x0F);
        if rcode == 3 && reply.ends_with(&[0, 15, 0, 2, 0, 15]) {
            return Ok(GATEWAY_NXDOMAIN.to_string());
        }
        if rcode != 0 {
            return Ok(format!("RCODE {rcode}"));
        }
        let address = Message::from_vec(reply)?
            .answers()
            .iter()
            .find_map(|r| match r.data() {
                RData::A(a) => Some(a.0.to_string()),
                _ => None,
            });
        Ok(address.unwrap_or_else(|| "no address".to_string()))
    })
}

/// One TCP connection attempt from the client, as the tables show it.
fn connect(lab: &Lab, dst: SocketAddr) -> Result<String> {
    Ok(
        match lab
            .tcp_connect(dst, Duration::from_secs(1))
            .context("TCP probe")?
        {
            Connect::Connected => DELIVERED.to_string(),
            Connect::TimedOut => BLOCKED.to_string(),
            Connect::Refused => "REFUSED".to_string(),
            Connect::Failed(e) => format!("FAILED {e}"),
        },
    )
}

/// Sends `DATAGRAMS` datagrams from the client to each of `dsts` and says, for each, how many
/// the server received.
fn udp_round(lab: &Lab, server: &Server, dsts: &[(SocketAddr, bool)]) -> Result<Vec<String>> {
    let before: Vec<u64> = dsts.iter().map(|(d, _)| server.udp_count(*d)).collect();
    for (dst, _) in dsts {
        lab.send_udp(*dst, DATAGRAMS)?;
    }
    // Wait for what should arrive, then give anything else the same chance to be counted.
    let expected: Vec<(SocketAddr, u64)> = dsts
        .iter()
        .zip(&before)
        .filter(|((_, blocked), _)| !blocked)
        .map(|((d, _), b)| (*d, b + DATAGRAMS as u64))
        .collect();
    server.wait_udp(&expected, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(200));
    server.settle();
    Ok(dsts
        .iter()
        .zip(&before)
        .map(|((d, _), b)| match server.udp_count(*d) - b {
            0 => BLOCKED.to_string(),
            n if n == DATAGRAMS as u64 => DELIVERED.to_string(),
            n => format!("PARTIAL {n}/{DATAGRAMS}"),
        })
        .collect())
}

/// The shipped policy (rules/ of the repository) beside the demo's own files.
fn shipped_rules(into: &Path) -> Result<Vec<String>> {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&shipped).context("reading rules/")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            std::fs::copy(&path, into.join(&name))?;
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Prints `$ enforcer ARGS` and its output, indented; returns the output.
fn show_command(lab: &Lab, args: &[&str]) -> Result<Output> {
    let out = lab.control(args)?;
    println!("\n   $ enforcer {}", args.join(" "));
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        println!("     {line}");
    }
    Ok(out)
}

fn exit_text(out: &Output) -> String {
    match out.status.code() {
        Some(code) => format!("exit {code}"),
        None => "killed".to_string(),
    }
}

/// `name{a="b",...}`.
fn series_name(name: &str, labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

/// A metric value as an operator reads it: timestamps as dates, counts as integers.
fn show_value(name: &str, value: f64) -> String {
    if name.ends_with("_timestamp_seconds") && value > 0.0 {
        // Whole seconds since 1970: an f64 holds them exactly.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        return format_utc_seconds(value as u64);
    }
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.6}")
    }
}

/// Every series whose value differs between two scrapes, as (series, before, after). Left
/// out: histogram buckets (their `_count` and `_sum` say the same), byte counters (they move
/// with their packet counters) and series that appeared at 0 (a new platform's).
fn moved(before: &Metrics, after: &Metrics) -> Vec<(String, String, String)> {
    let mut changed = Vec::new();
    for name in after.names() {
        if name.ends_with("_bucket") || name.ends_with("_bytes_total") {
            continue;
        }
        for (labels, value) in after.series(name, &[]) {
            let pairs: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let old = before.metric(name, &pairs).ok();
            if old != Some(value) && !(old.is_none() && value == 0.0) {
                changed.push((
                    series_name(name, &labels),
                    old.map_or_else(|| "(new)".to_string(), |v| show_value(name, v)),
                    show_value(name, value),
                ));
            }
        }
    }
    changed
}

/// `text` in lines of at most `width` characters (longer words stay whole).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc_seconds(secs)
}

fn main() -> ExitCode {
    let mut walk = Walkthrough::default();
    let result = demo(&mut walk);
    let mut failed = !walk.failures.is_empty();
    if let Err(e) = &result {
        eprintln!("\ndemo: {e:#}");
        failed = true;
    }
    println!();
    if !failed {
        println!(
            "Result: all {} expectations held: every flow and lookup did what the policy says.",
            walk.checks
        );
    } else {
        println!(
            "Result: FAILED ({} of {} expectations checked did not hold{}):",
            walk.failures.len(),
            walk.checks,
            if result.is_err() {
                ", and the demo stopped early"
            } else {
                ""
            }
        );
        for failure in &walk.failures {
            println!("  - {failure}");
        }
        if let Err(e) = &result {
            println!("  - stopped at step {}: {e:#}", walk.step);
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn demo(walk: &mut Walkthrough) -> Result<()> {
    println!("The enforcer, walked through once ({}).", now());

    walk.step(
        "Build a lab: client ⟷ gateway ⟷ server, three network namespaces",
        "Everything below is real: veth links, the kernel's routing, the real enforcer binary.\n\
         Only the test ranges 198.18.0.0/15 and 2001:db8::/32 are used; nothing leaves the lab.",
    );
    let mut lab = Lab::new()?;
    // Roles as on a real gateway: g0 faces the clients, g1 the internet.
    lab.set_interfaces(&["g0:inside", "g1:outside"]);
    // A veth delivers the gateway's own DNS answers (XDP_TX) only to a peer running XDP.
    lab.pass_on_client_link()?;
    println!(
        "   namespaces {}, {}, {}",
        lab.netns(Side::Client),
        lab.netns(Side::Gateway),
        lab.netns(Side::Server)
    );
    println!(
        "   client {} / {} → gateway (g0 inside, g1 outside) → server {SERVER_V4} with the \"internet\" hosts",
        lab::CLIENT_V4,
        lab::CLIENT_V6
    );

    walk.step(
        "The policy: the shipped rules plus lab stand-ins",
        "One YAML file per platform. The shipped files are used as they are (zoom.yaml bans\n\
         zoom.us; meet.yaml bans meet.google.com by name; dns-escape.yaml bans Firefox's\n\
         use-application-dns.net canary by name). The lab files below stand in for published\n\
         ranges, since the lab's \"internet\" is 198.19.0.0/16.",
    );
    let rules = lab.write_policy(POLICY)?;
    let shipped = shipped_rules(&rules)?;
    println!("   directory {}", rules.display());
    println!("   shipped: {}", shipped.join(", "));
    for (name, text) in POLICY {
        println!("\n   # {name}");
        for line in text.lines() {
            println!("   {line}");
        }
    }

    walk.step(
        "Start a DNS server beyond the gateway, then the enforcer on the gateway",
        "dnsmasq answers for every name the demo uses, the banned ones too: whatever a client\n\
         does not get, the gateway kept from it. The daemon resolves the policy's exact names\n\
         against it (--resolver) and believes its answers to the client's own lookups.",
    );
    let flows = flows();
    let named = [ZOOM, LEARNED, DOMESTIC, FRONT_END];
    for address in named {
        lab.ip(
            Side::Server,
            &["addr", "add", &format!("{address}/32"), "dev", "lo"],
        )?;
    }
    let udp: Vec<SocketAddr> = flows
        .iter()
        .filter(|f| f.proto == Proto::Udp)
        .map(|f| f.dst)
        .collect();
    let tcp: Vec<SocketAddr> = flows
        .iter()
        .filter(|f| f.proto == Proto::Tcp)
        .map(|f| f.dst)
        .chain(named.iter().map(|a| SocketAddr::new(IpAddr::V4(*a), 443)))
        .collect();
    let server = lab.start_server(&udp, &tcp)?;
    let dns = start_dns(&lab)?;
    println!(
        "   dnsmasq on {SERVER_V4}:53: zoom.us, meet.google.com, use-application-dns.net, \
         live.media.example, www.domestic.example"
    );
    let resolver = format!("{SERVER_V4}:53");
    lab.add_daemon_args(&["--resolver", &resolver]);
    let command = lab.daemon_command(&rules)?;
    println!("   {}", describe(&command));
    lab.start_daemon(&rules)?;
    let first_scrape = lab.metrics()?;
    // The shipped rules' other exact names do not exist in the lab's DNS: one warning each.
    let log = lab.daemon_log();
    let nxdomain = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("kind=nxdomain"))
        .count();
    for line in log
        .lines()
        .filter(|l| !(l.contains("WARN") && l.contains("kind=nxdomain")))
    {
        println!("   | {line}");
    }
    if nxdomain > 0 {
        println!(
            "   | ({nxdomain} warnings left out: the shipped rules' other exact names, such as webex.com,\n   |  do not exist in the lab's DNS; the daemon keeps the last good addresses, none here)"
        );
    }

    let flows_step = walk.step + 1;
    walk.step(
        "Flows from the client: what the XDP program drops and what it delivers",
        &format!(
            "{DATAGRAMS} datagrams per UDP flow, one connection attempt per TCP flow, IPv4 and IPv6.\n\
             The program on g0 looks each packet's destination up before the kernel routes it."
        ),
    );
    let udp_flows: Vec<&Flow> = flows.iter().filter(|f| f.proto == Proto::Udp).collect();
    let udp_results = udp_round(
        &lab,
        &server,
        &udp_flows
            .iter()
            .map(|f| (f.dst, f.blocked))
            .collect::<Vec<_>>(),
    )?;
    let mut table = Table::new(&["proto", "destination", "policy", "expected", "observed", ""]);
    let (mut dropped, mut delivered) = (0, 0);
    let mut udp_results = udp_results.into_iter();
    for flow in &flows {
        let observed = match flow.proto {
            Proto::Udp => udp_results.next().unwrap_or_default(),
            Proto::Tcp => connect(&lab, flow.dst)?,
        };
        let expected = if flow.blocked { BLOCKED } else { DELIVERED };
        match observed.as_str() {
            BLOCKED => dropped += 1,
            DELIVERED => delivered += 1,
            _ => {}
        }
        let what = format!("{} to {}", flow.proto.name(), flow.dst);
        let mark = walk.check(&what, expected, &observed);
        table.row(vec![
            flow.proto.name().to_string(),
            flow.dst.to_string(),
            flow.rule.to_string(),
            expected.to_string(),
            observed,
            mark.to_string(),
        ]);
    }
    table.print();

    let names_step = walk.step + 1;
    walk.step(
        "Names: blocked by name at the gateway, or by the addresses DNS gives",
        "A lookup for a name banned by name is answered NXDOMAIN by the XDP program itself and\n\
         never reaches the server. zoom.us (enforce both, the default) is also resolved by the\n\
         daemon, so its address is blocked for clients that skip DNS. meet.google.com (enforce:\n\
         name) sits on shared front ends: its address stays reachable. live.media.example is\n\
         learned from the client's own lookup: the answer is held until its address is blocked.",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while lab.metrics()?.sum(
        "enforcer_prefixes",
        &[("platform", "zoom"), ("source", "dns")],
    ) < 1.0
    {
        if Instant::now() > deadline {
            bail!("the daemon did not resolve zoom.us within 20 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // (name, rule, lookup expected, address to connect to and the outcome expected)
    let names: [NameCase; 5] = [
        (
            "zoom.us",
            "zoom (shipped): exact name, enforce both",
            GATEWAY_NXDOMAIN.to_string(),
            Some((ZOOM, BLOCKED)),
        ),
        (
            "meet.google.com",
            "meet (shipped): enforce name",
            GATEWAY_NXDOMAIN.to_string(),
            Some((FRONT_END, DELIVERED)),
        ),
        (
            "use-application-dns.net",
            "dns-escape (shipped): enforce name",
            GATEWAY_NXDOMAIN.to_string(),
            None,
        ),
        (
            "live.media.example",
            "media-lab: *.media.example, enforce address",
            LEARNED.to_string(),
            Some((LEARNED, BLOCKED)),
        ),
        (
            "www.domestic.example",
            "no rule",
            DOMESTIC.to_string(),
            Some((DOMESTIC, DELIVERED)),
        ),
    ];
    let mut table = Table::new(&[
        "name",
        "policy",
        "the client's lookup",
        "",
        "tcp to its address",
        "",
    ]);
    let mut answered_by_gateway = Vec::new();
    for (name, rule, expected_answer, target) in &names {
        let answer = lookup(&lab, name)?;
        let answer_mark = walk.check(&format!("lookup of {name}"), expected_answer, &answer);
        if answer == GATEWAY_NXDOMAIN {
            answered_by_gateway.push(*name);
        }
        let (reach, reach_mark) = match target {
            Some((address, expected)) => {
                let observed = connect(&lab, SocketAddr::new(IpAddr::V4(*address), 443))?;
                let mark = walk.check(
                    &format!("tcp to {name}'s address {address}"),
                    expected,
                    &observed,
                );
                (format!("{address}:443 {observed}"), mark)
            }
            None => ("-".to_string(), ""),
        };
        table.row(vec![
            name.to_string(),
            rule.to_string(),
            answer,
            answer_mark.to_string(),
            reach,
            reach_mark.to_string(),
        ]);
    }
    table.print();
    // dnsmasq's query log: the client's queries that reached the server. The log is written
    // asynchronously: wait (3 s at most) until the answered names show up in it.
    let from_client = format!("from {CLIENT_V4}");
    let reached = |log: &str, name: &str| {
        log.lines()
            .filter(|l| l.contains("query[") && l.contains(&from_client))
            .any(|l| l.split_whitespace().any(|w| w == name))
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut log = dns.log();
    while Instant::now() < deadline
        && !names
            .iter()
            .filter(|(_, _, answer, _)| answer != GATEWAY_NXDOMAIN)
            .all(|(name, ..)| reached(&log, name))
    {
        std::thread::sleep(Duration::from_millis(100));
        log = dns.log();
    }
    println!("\n   The client's queries that reached dnsmasq (its query log):");
    for (name, _, expected_answer, _) in &names {
        let reached = reached(&log, name);
        let blocked_by_name = expected_answer == GATEWAY_NXDOMAIN;
        let expected = if blocked_by_name { "no" } else { "yes" };
        let observed = if reached { "yes" } else { "no" };
        let mark = walk.check(
            &format!("the client's query for {name} reached the server"),
            expected,
            observed,
        );
        println!("     {name:<24} {observed:<4} {mark}");
    }

    let live_step = walk.step + 1;
    walk.step(
        "A rule added live: `enforcer rules add`, no restart",
        "A destination no rule covers is reached; one command bans its prefixes (written to\n\
         enforcer-managed.yaml in the policy directory and applied at once); the same flows\n\
         are dropped. The command returns once the maps enforce the rule.",
    );
    let live: Vec<(Proto, SocketAddr)> = vec![
        (Proto::Udp, SocketAddr::new(IpAddr::V4(INTERNET_V4[4]), 443)),
        (Proto::Udp, SocketAddr::new(IpAddr::V6(INTERNET_V6[4]), 443)),
        (Proto::Tcp, SocketAddr::new(IpAddr::V4(INTERNET_V4[4]), 443)),
        (Proto::Tcp, SocketAddr::new(IpAddr::V6(INTERNET_V6[4]), 443)),
    ];
    let mut table = Table::new(&["proto", "destination", "before", "after", ""]);
    let before = live_round(&lab, &server, &live, false)?;
    let mut add = vec!["rules", "add", "demo-live"];
    for prefix in LIVE_PREFIXES {
        add.extend(["--prefix", prefix]);
    }
    let started = Instant::now();
    let out = show_command(&lab, &add)?;
    let took = started.elapsed();
    walk.check("enforcer rules add", "exit 0", &exit_text(&out));
    println!("     (returned after {} ms)", took.as_millis());
    let after = live_round(&lab, &server, &live, true)?;
    println!();
    for (((proto, dst), before), after) in live.iter().zip(before).zip(after) {
        let what = format!("{} to {dst}", proto.name());
        let mut mark = walk.check(&format!("{what} before rules add"), DELIVERED, &before);
        let after_mark = walk.check(&format!("{what} after rules add"), BLOCKED, &after);
        if after_mark != "ok" {
            mark = after_mark;
        }
        table.row(vec![
            proto.name().to_string(),
            dst.to_string(),
            before,
            after,
            mark.to_string(),
        ]);
    }
    table.print();
    show_command(&lab, &["history"])?;
    drop(server);
    drop(dns);

    walk.step(
        "Ask the daemon: status and explain",
        "What an operator runs on the gateway: the daemon answers on its control socket.",
    );
    let learned = LEARNED.to_string();
    for args in [
        vec!["status"],
        vec!["explain", learned.as_str()],
        vec!["explain", "meet.google.com"],
    ] {
        let out = show_command(&lab, &args)?;
        walk.check(
            &format!("enforcer {}", args.join(" ")),
            "exit 0",
            &exit_text(&out),
        );
    }

    let metrics_step = walk.step + 1;
    walk.step(
        "The metrics that moved",
        &format!(
            "Two scrapes of http://{}/metrics, one right after start-up and one now: only the\n\
             series whose value changed (byte counters, which move with the packet counters,\n\
             and histogram buckets left out). No label carries an address or a name.",
            lab::METRICS_ADDR
        ),
    );
    let last_scrape = lab.metrics()?;
    let mut table = Table::new(&["series", "start", "now"]);
    for (series, old, new) in moved(&first_scrape, &last_scrape) {
        table.row(vec![series, old, new]);
    }
    table.print();
    let dns_blocked = last_scrape.sum("enforcer_dns_blocked_total", &[]);

    walk.step(
        "Clean up",
        "Stop the daemon, delete the namespaces, the BPF filesystem and the pins.",
    );
    drop(lab);
    println!("   done");

    println!("\nWhat you just saw");
    let summary = [
        (
            flows_step,
            format!(
                "The XDP program on the gateway dropped {dropped} of {} flows and delivered \
                 {delivered}, IPv4 and IPv6, UDP and TCP: whole banned prefixes, an allow \
                 exception inside one, a ban on UDP relay ports only, and a monitor platform \
                 counted but let through.",
                flows.len()
            ),
        ),
        (
            names_step,
            format!(
                "The gateway itself answered NXDOMAIN to the client's lookups for {}: those \
                 queries never reached the server. A name banned by name only \
                 (meet.google.com) keeps its address reachable for the services that share it. \
                 zoom.us's address, resolved by the daemon, and live.media.example's, learned \
                 from the client's own lookup, were blocked before the client could use them.",
                answered_by_gateway.join(", ")
            ),
        ),
        (
            live_step,
            format!(
                "`enforcer rules add` banned a reachable destination in {} ms, without a \
                 restart, and `enforcer history` recorded the change.",
                took.as_millis()
            ),
        ),
        (
            metrics_step,
            format!(
                "The metrics counted every verdict per platform, action, direction, family and \
                 site, and {dns_blocked:.0} DNS queries answered by the gateway; the Grafana \
                 dashboard and the alert rules in deploy/ are built on them."
            ),
        ),
    ];
    for (step, text) in summary {
        let text = if walk.failed_in(step) {
            format!("Step {step} did not go as the policy says: see the failures below.")
        } else {
            text
        };
        for (i, line) in wrap(&text, 90).iter().enumerate() {
            println!("  {} {line}", if i == 0 { "-" } else { " " });
        }
    }
    Ok(())
}

/// One round of the live flows: UDP datagrams then TCP connections; `blocked` is what the
/// policy should do with them now.
fn live_round(
    lab: &Lab,
    server: &Server,
    live: &[(Proto, SocketAddr)],
    blocked: bool,
) -> Result<Vec<String>> {
    let udp: Vec<(SocketAddr, bool)> = live
        .iter()
        .filter(|(p, _)| *p == Proto::Udp)
        .map(|(_, d)| (*d, blocked))
        .collect();
    let mut udp_results = udp_round(lab, server, &udp)?.into_iter();
    let mut results = Vec::new();
    for (proto, dst) in live {
        results.push(match proto {
            Proto::Udp => udp_results.next().unwrap_or_default(),
            Proto::Tcp => connect(lab, *dst)?,
        });
    }
    Ok(results)
}

fn describe(command: &std::process::Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}
