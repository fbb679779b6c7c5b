//! `cargo xtask demo`: a client, a gateway running the real enforcer, and a server holding a
//! few "internet" hosts, each in its own network namespace. Shows which flows the policy
//! blocks and which it delivers, then the daemon's metrics, then removes everything.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use tests::dns::{Dnsmasq, Zone};
use tests::lab::{self, Connect, INTERNET_V4, INTERNET_V6, Lab, SERVER_V4, Side};

/// Hosts the demo's DNS server names, on the server's loopback (routed like the others).
const RESOLVED: Ipv4Addr = Ipv4Addr::new(198, 19, 50, 5);
const LEARNED: Ipv4Addr = Ipv4Addr::new(198, 19, 60, 5);
const DOMESTIC: Ipv4Addr = Ipv4Addr::new(198, 19, 70, 5);

/// dnsmasq beyond the gateway (port 53 of the server), answering for the lab.
fn start_dns(lab: &Lab) -> Result<Dnsmasq> {
    let zone = Zone::new().local("#").local_ttl(300).hosts_file(format!(
        "{RESOLVED} zoom.us\n{LEARNED} live.media.example\n{DOMESTIC} www.domestic.example\n"
    ));
    Dnsmasq::start_in(
        &lab.netns_path(Side::Server),
        &[IpAddr::V4(SERVER_V4)],
        Some(53),
        &zone,
    )
}

/// The client asks the lab's DNS server for `name` (A), like a stub resolver.
fn lookup(lab: &Lab, name: &str) -> Result<Option<Ipv4Addr>> {
    let name = name.to_owned();
    lab.in_netns(Side::Client, move || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut query = Message::new();
        query.set_id(rand::random());
        query.set_recursion_desired(true);
        query.add_query(Query::query(Name::from_str(&name)?, RecordType::A));
        socket.send_to(&query.to_vec()?, (SERVER_V4, 53))?;
        let mut buf = [0u8; 1500];
        let Ok((n, _)) = socket.recv_from(&mut buf) else {
            return Ok(None);
        };
        Ok(Message::from_vec(&buf[..n])?
            .answers()
            .iter()
            .find_map(|r| match r.data() {
                RData::A(a) => Some(a.0),
                _ => None,
            }))
    })
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

const DATAGRAMS: usize = 10;

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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    Udp,
    Tcp,
}

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
                "zoom-media: drop the whole prefix",
                true,
            ),
            (
                Proto::Tcp,
                at(media, 443),
                "zoom-media: drop the whole prefix",
                true,
            ),
            (
                Proto::Udp,
                at(support, 443),
                "zoom-support: allow (exception)",
                false,
            ),
            (
                Proto::Tcp,
                at(support, 443),
                "zoom-support: allow (exception)",
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
            (Proto::Tcp, at(relay, 3478), "meet-relays: udp only", false),
            (
                Proto::Udp,
                at(watched, 443),
                "watched-lab: monitor (count, pass)",
                false,
            ),
            (
                Proto::Tcp,
                at(watched, 443),
                "watched-lab: monitor (count, pass)",
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

fn main() -> ExitCode {
    match demo() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            println!("\nSome flows did not behave as the policy says.");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo() -> Result<bool> {
    println!("Building the lab: client ⟷ gateway ⟷ server network namespaces");
    let mut lab = Lab::new()?;
    println!(
        "  namespaces {}, {}, {}",
        lab.netns(Side::Client),
        lab.netns(Side::Gateway),
        lab.netns(Side::Server)
    );
    println!(
        "  client {} / {} → gateway (enforcer on g0 and g1) → server with internet hosts",
        lab::CLIENT_V4,
        lab::CLIENT_V6
    );

    let rules = lab.write_policy(POLICY)?;
    let shipped = shipped_rules(&rules)?;
    println!(
        "\nPolicy ({}): the shipped rules ({}) plus lab stand-ins for published ranges:",
        rules.display(),
        shipped.join(", ")
    );
    for (name, text) in POLICY {
        println!("  # {name}");
        for line in text.lines() {
            println!("  {line}");
        }
    }

    let flows = flows();
    let udp: Vec<SocketAddr> = flows
        .iter()
        .filter(|f| f.proto == Proto::Udp)
        .map(|f| f.dst)
        .collect();
    let tcp: Vec<SocketAddr> = flows
        .iter()
        .filter(|f| f.proto == Proto::Tcp)
        .map(|f| f.dst)
        .collect();
    for address in [RESOLVED, LEARNED, DOMESTIC] {
        lab.ip(
            Side::Server,
            &["addr", "add", &format!("{address}/32"), "dev", "lo"],
        )?;
    }
    let named: Vec<SocketAddr> = [RESOLVED, LEARNED, DOMESTIC]
        .iter()
        .map(|a| SocketAddr::new(IpAddr::V4(*a), 443))
        .collect();
    let tcp: Vec<SocketAddr> = tcp.into_iter().chain(named.iter().copied()).collect();
    let server = lab.start_server(&udp, &tcp)?;
    println!(
        "\nStarting dnsmasq beyond the gateway ({SERVER_V4}:53): zoom.us, live.media.example, www.domestic.example"
    );
    let dns = start_dns(&lab)?;
    let resolver = format!("{SERVER_V4}:53");
    lab.add_daemon_args(&["--resolver", &resolver]);

    println!("\nStarting the enforcer on the gateway:");
    let command = lab.daemon_command(&rules)?;
    println!("  {}", describe(&command));
    lab.start_daemon(&rules)?;
    for line in lab.daemon_log().lines() {
        println!("  | {line}");
    }

    for flow in flows.iter().filter(|f| f.proto == Proto::Udp) {
        lab.send_udp(flow.dst, DATAGRAMS)?;
    }
    let expected: Vec<(SocketAddr, u64)> = flows
        .iter()
        .filter(|f| f.proto == Proto::Udp && !f.blocked)
        .map(|f| (f.dst, DATAGRAMS as u64))
        .collect();
    server.wait_udp(&expected, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));

    println!(
        "\nFlows from the client ({DATAGRAMS} datagrams per UDP flow, one connection attempt per TCP flow):"
    );
    println!(
        "  {:<5} {:<24} {:<36} {:<10} {:<10}",
        "proto", "destination", "policy", "expected", "observed"
    );
    let mut all_as_expected = true;
    for flow in &flows {
        let (proto, observed) = match flow.proto {
            Proto::Udp => {
                let got = server.udp_count(flow.dst);
                let observed = match got {
                    0 => "BLOCKED".to_string(),
                    n if n == DATAGRAMS as u64 => "DELIVERED".to_string(),
                    n => format!("PARTIAL {n}/{DATAGRAMS}"),
                };
                ("udp", observed)
            }
            Proto::Tcp => {
                let observed = match lab
                    .tcp_connect(flow.dst, Duration::from_secs(1))
                    .context("TCP probe")?
                {
                    Connect::Connected => "DELIVERED".to_string(),
                    Connect::TimedOut => "BLOCKED".to_string(),
                    Connect::Refused => "REFUSED".to_string(),
                    Connect::Failed(e) => format!("FAILED {e}"),
                };
                ("tcp", observed)
            }
        };
        let expected = if flow.blocked { "BLOCKED" } else { "DELIVERED" };
        let mark = if observed == expected {
            ""
        } else {
            all_as_expected = false;
            "  <-- unexpected"
        };
        println!(
            "  {proto:<5} {:<24} {:<36} {expected:<10} {observed}{mark}",
            flow.dst.to_string(),
            flow.rule
        );
    }

    // Names: one resolved by the daemon, one learned from a client's lookup, one allowed.
    println!(
        "\nNames (the daemon resolves exact domains itself and learns wildcards from answers):"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while lab.metrics()?.sum(
        "enforcer_prefixes",
        &[("platform", "zoom"), ("source", "dns")],
    ) < 1.0
    {
        if Instant::now() > deadline {
            bail!("the daemon did not resolve zoom.us");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for (name, expected, why) in [
        (
            "zoom.us",
            "BLOCKED",
            "zoom: exact domain, resolved by the daemon",
        ),
        (
            "live.media.example",
            "BLOCKED",
            "media-lab: *.media.example, learned",
        ),
        ("www.domestic.example", "DELIVERED", "no rule"),
    ] {
        let Some(address) = lookup(&lab, name)? else {
            bail!("no answer for {name}");
        };
        let observed = match lab.tcp_connect(
            SocketAddr::new(IpAddr::V4(address), 443),
            Duration::from_secs(1),
        )? {
            Connect::Connected => "DELIVERED".to_string(),
            Connect::TimedOut => "BLOCKED".to_string(),
            other => format!("{other:?}"),
        };
        let mark = if observed == expected {
            ""
        } else {
            all_as_expected = false;
            "  <-- unexpected"
        };
        println!(
            "  tcp   {:<24} {:<36} {expected:<10} {observed}{mark}",
            format!("{name} ({address})"),
            why
        );
    }
    drop(server);
    drop(dns);

    for args in [
        vec!["status"],
        vec!["explain", &LEARNED.to_string()],
        vec!["explain", &RESOLVED.to_string()],
    ] {
        let out = lab.control(&args)?;
        println!("\n$ enforcer {}", args.join(" "));
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            println!("  {line}");
        }
    }

    let metrics = lab.metrics()?;
    println!(
        "\nThe daemon's metrics (http://{} inside the gateway namespace):",
        lab::METRICS_ADDR
    );
    for line in metrics.sample_lines("enforcer_") {
        println!("  {line}");
    }

    println!("\nCleaning up: stopping the daemon, deleting the namespaces and the pins.");
    drop(lab);
    println!("Done.");
    Ok(all_as_expected)
}

fn describe(command: &std::process::Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}
