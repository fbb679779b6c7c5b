//! `cargo xtask demo`: a client, a gateway running the real enforcer, and a server holding a
//! few "internet" hosts, each in its own network namespace. Shows which flows the policy
//! blocks and which it delivers, then the daemon's metrics, then removes everything.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tests::lab::{self, Connect, INTERNET_V4, INTERNET_V6, Lab, Side};

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
        "webex.yaml",
        "\
platform: webex
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
                "webex: monitor (count, pass)",
                false,
            ),
            (
                Proto::Tcp,
                at(watched, 443),
                "webex: monitor (count, pass)",
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
    println!("\nPolicy ({}):", rules.display());
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
    let server = lab.start_server(&udp, &tcp)?;

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
    drop(server);

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
