//! Prometheus exposition at `--metrics`: counters are read from the per-CPU maps at scrape time.
//! No label ever carries an address or a name.
//! The metrics and their labels are listed in docs/reference.md ("Prometheus metrics").

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use enforcer_common::{
    ACTION_NAMES, DIRECTION_NAMES, FAMILY_IPV4, FAMILY_IPV6, FAMILY_NAMES, PASS_DNS_HELD,
    PASS_REASON_NAMES, RULE_SLOTS,
};
use ipnet::IpNet;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

mod names;
mod sites;
pub use names::{BlockedCounts, name_counts, render_dns_blocked, render_names};

use crate::connections::{Gate, REQUEST_TIMEOUT, Slot};
use crate::daemon::{Daemon, State};
use crate::datapath::MatchKey;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("--metrics {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Longest HTTP request head read.
const MAX_REQUEST: usize = 8192;
/// Connections the kernel queues until the daemon accepts them.
const BACKLOG: u32 = 1024;

/// Bundle mode's series: the version in force, its age, and every fetch result (all from 0).
fn render_bundle(out: &mut String, mode: &crate::daemon::BundleMode) {
    use crate::bundle::follow::FetchResult;
    header(
        out,
        "enforcer_bundle_version",
        "gauge",
        "The policy bundle version in force (the repository's targets version).",
    );
    let _ = writeln!(out, "enforcer_bundle_version {}", mode.applied.version);
    header(
        out,
        "enforcer_bundle_age_seconds",
        "gauge",
        "Seconds since the bundle in force was built and signed.",
    );
    let age = mode.applied.bundle.age(SystemTime::now()).as_secs();
    let _ = writeln!(out, "enforcer_bundle_age_seconds {age}");
    header(
        out,
        "enforcer_bundle_fetches_total",
        "counter",
        "Looks at the bundle repository, by result.",
    );
    for result in FetchResult::ALL {
        let _ = writeln!(
            out,
            "enforcer_bundle_fetches_total{{result=\"{}\"}} {}",
            result.as_str(),
            mode.fetches[result.index()]
        );
    }
}

/// Serves scrapes on `addr`, as many at once as `gate` allows, until the task is aborted.
pub async fn spawn(
    addr: SocketAddr,
    daemon: Daemon,
    gate: Arc<Gate>,
) -> Result<JoinHandle<()>, MetricsError> {
    let listener = listen(addr).map_err(|source| MetricsError::Bind { addr, source })?;
    tracing::info!(%addr, "metrics listening");
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    // Without a slot the connection is closed at once (the gate logs it).
                    let Some(slot) = gate.admit().await else {
                        continue;
                    };
                    let daemon = daemon.clone();
                    // The request, the rendering and the answer together get REQUEST_TIMEOUT.
                    tokio::spawn(async move {
                        let _ =
                            tokio::time::timeout(REQUEST_TIMEOUT, respond(stream, slot, daemon))
                                .await;
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }))
}

/// A listener whose kernel queue takes a burst of clients (tokio's default of 128 drops the rest,
/// and a dropped connection attempt costs a scraper a one-second retry).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// A minimal HTTP/1.1 responder: GET /metrics answers, everything else is 404/405.
async fn respond(mut stream: TcpStream, mut slot: Slot, daemon: Daemon) -> std::io::Result<()> {
    let request = tokio::select! {
        () = slot.closing() => return Ok(()),
        request = read_head(&mut stream) => request?,
    };
    let Some(request) = request else {
        return Ok(());
    };
    if !slot.busy() {
        return Ok(());
    }
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let (status, body) = match (method, path) {
        (b"GET", b"/metrics") => {
            let body = tokio::task::spawn_blocking(move || daemon.render_metrics())
                .await
                .unwrap_or_else(|_| Err("render task failed".into()));
            match body {
                Ok(body) => ("200 OK", body),
                Err(message) => ("500 Internal Server Error", message),
            }
        }
        (b"GET", _) => ("404 Not Found", "not found\n".to_string()),
        _ => ("405 Method Not Allowed", "only GET\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// The request head up to its blank line; None when the client leaves first or sends more than
/// MAX_REQUEST.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut request = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || request.len() + n > MAX_REQUEST {
            return Ok(None);
        }
        request.extend_from_slice(&buf[..n]);
    }
    Ok(Some(request))
}

/// `(code, label)` pairs of a name table indexed by code (see `enforcer_common::*_NAMES`).
fn labelled<const N: usize>(names: [&'static str; N]) -> impl Iterator<Item = (u8, &'static str)> {
    (0u8..).zip(names)
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The exposition of everything the daemon counts, at this moment.
pub fn render(state: &State) -> Result<String, String> {
    // Ids last across policy changes, so they need not be dense: read up to the highest.
    let platform_count = (0..state.policy().platforms.len())
        .map(|i| state.policy().platform_id(i))
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    let counters = state
        .datapath()
        .counters_up_to(Some(platform_count))
        .map_err(|e| e.to_string())?;
    let mut out = String::with_capacity(8192);

    for (name, help, bytes) in [
        (
            "enforcer_packets_total",
            "Packets that matched a platform, by verdict.",
            false,
        ),
        (
            "enforcer_bytes_total",
            "Bytes of packets that matched a platform, by verdict.",
            true,
        ),
    ] {
        header(&mut out, name, "counter", help);
        for (index, platform) in state.policy().platforms.iter().enumerate() {
            let id = state.policy().platform_id(index);
            // Its own action, its sites' actions, and any other it counted before a change.
            let mut actions: std::collections::BTreeSet<u8> = platform
                .action_by_site
                .iter()
                .map(|a| a.action.code())
                .collect();
            actions.insert(platform.action.code());
            actions.extend(
                counters
                    .matches
                    .keys()
                    .filter(|k| k.platform == id)
                    .map(|k| k.action),
            );
            for action in actions {
                let action_name = ACTION_NAMES
                    .get(usize::from(action))
                    .copied()
                    .unwrap_or("drop");
                for (direction, direction_name) in labelled(DIRECTION_NAMES) {
                    for (family, family_name) in labelled(FAMILY_NAMES) {
                        let key = MatchKey {
                            platform: id,
                            action,
                            direction,
                            family,
                        };
                        let c = counters.matches.get(&key).copied().unwrap_or_default();
                        let value = if bytes { c.bytes } else { c.packets };
                        let _ = writeln!(
                            out,
                            "{name}{{platform=\"{}\",action=\"{action_name}\",direction=\"{direction_name}\",family=\"{family_name}\"}} {value}",
                            platform.name
                        );
                    }
                }
            }
        }
    }
    let by_site = counters.by_site(!state.sites().sites.is_empty());
    sites::render_sites(&mut out, state, &by_site);

    header(
        &mut out,
        "enforcer_passed_packets_total",
        "counter",
        "Packets that matched no platform, by reason.",
    );
    for (reason, name) in PASS_REASON_NAMES.iter().enumerate() {
        let _ = writeln!(
            out,
            "enforcer_passed_packets_total{{reason=\"{name}\"}} {}",
            counters.passed[reason].packets
        );
    }

    header(
        &mut out,
        "enforcer_dns_held_packets_total",
        "counter",
        "DNS responses held by the datapath until their answers were enforced, then sent on.",
    );
    let _ = writeln!(
        out,
        "enforcer_dns_held_packets_total {}",
        counters.passed[PASS_DNS_HELD as usize].packets
    );

    header(
        &mut out,
        "enforcer_prefixes",
        "gauge",
        "Prefixes enforced per platform, family and source.",
    );
    let dns = state.book().counts();
    let learned_counts = state.learner().set.counts();
    for platform in &state.policy().platforms {
        let resolved = dns.get(&platform.name).copied().unwrap_or_default();
        let learned = learned_counts
            .get(&platform.name)
            .copied()
            .unwrap_or_default();
        let (mut v4, mut v6) = (0usize, 0usize);
        for net in platform.entries.iter().flat_map(|e| e.prefixes.iter()) {
            match net {
                IpNet::V4(_) => v4 += 1,
                IpNet::V6(_) => v6 += 1,
            }
        }
        for (family, published, resolved, learned) in [
            (
                FAMILY_NAMES[usize::from(FAMILY_IPV4)],
                v4,
                resolved.ipv4,
                learned.ipv4,
            ),
            (
                FAMILY_NAMES[usize::from(FAMILY_IPV6)],
                v6,
                resolved.ipv6,
                learned.ipv6,
            ),
        ] {
            for (source, value) in [
                ("dns", resolved),
                ("published", published),
                ("learned", learned),
            ] {
                let _ = writeln!(
                    out,
                    "enforcer_prefixes{{platform=\"{}\",family=\"{family}\",source=\"{source}\"}} {value}",
                    platform.name
                );
            }
        }
    }

    render_names(state.policy(), &mut out);

    header(
        &mut out,
        "enforcer_collateral_names",
        "gauge",
        "Names outside a platform that DNS answers gave for addresses its blocks cover.",
    );
    let collateral = crate::daemon::collateral_name_counts(state);
    for platform in &state.policy().platforms {
        let _ = writeln!(
            out,
            "enforcer_collateral_names{{platform=\"{}\"}} {}",
            platform.name,
            collateral.get(&platform.name).copied().unwrap_or(0)
        );
    }
    // The datapath's blocked-query counters are not read yet: every series is written at 0.
    let policy = state.policy();
    let ids = (0..policy.platforms.len()).map(|i| policy.platform_id(i));
    let platforms = ids.max().map_or(0, |m| m.saturating_add(1));
    let blocked: Vec<(u16, u8, u64)> = match state.datapath().dns_blocked(platforms) {
        Ok(counts) => counts
            .into_iter()
            .map(|(platform, family, c)| (platform, family, c.packets))
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "cannot read the datapath's blocked-query counts");
            Vec::new()
        }
    };
    render_dns_blocked(policy, &blocked, &mut out);

    state.resolve_metrics().render(&mut out);
    let dns_stats = state.datapath().dns_stats().unwrap_or_else(|error| {
        tracing::warn!(%error, "cannot read the datapath's DNS counts");
        Default::default()
    });
    state.learner().counters.render(&dns_stats, &mut out);

    header(
        &mut out,
        "enforcer_policy_reloads_total",
        "counter",
        "Policy reloads by result.",
    );
    let _ = writeln!(
        out,
        "enforcer_policy_reloads_total{{result=\"ok\"}} {}",
        state.reloads().ok
    );
    let _ = writeln!(
        out,
        "enforcer_policy_reloads_total{{result=\"error\"}} {}",
        state.reloads().error
    );

    header(
        &mut out,
        "enforcer_last_policy_update_timestamp_seconds",
        "gauge",
        "When the policy in force was applied.",
    );
    let updated = state
        .last_policy_update()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "enforcer_last_policy_update_timestamp_seconds {updated}"
    );

    if let Some(mode) = state.bundle_mode() {
        render_bundle(&mut out, mode);
    }

    header(
        &mut out,
        "enforcer_xdp_attached",
        "gauge",
        "1 for each interface the program is attached to.",
    );
    for a in state.attached() {
        let _ = writeln!(
            out,
            "enforcer_xdp_attached{{interface=\"{}\",mode=\"{}\"}} 1",
            a.interface,
            a.mode.as_str()
        );
    }

    let fill = map_fill(state);
    header(
        &mut out,
        "enforcer_map_entries",
        "gauge",
        "Entries in each datapath map.",
    );
    for (map, value, _) in fill {
        let _ = writeln!(out, "enforcer_map_entries{{map=\"{map}\"}} {value}");
    }
    header(
        &mut out,
        "enforcer_map_capacity",
        "gauge",
        "Capacity of each datapath map.",
    );
    for (map, _, value) in fill {
        let _ = writeln!(out, "enforcer_map_capacity{{map=\"{map}\"}} {value}");
    }

    header(
        &mut out,
        "enforcer_build_info",
        "gauge",
        "Version of the running enforcer.",
    );
    let _ = writeln!(
        out,
        "enforcer_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    Ok(out)
}

/// (map, entries, capacity) of each datapath map: `enforcer_map_entries` / `_capacity`, and
/// `enforcer top`'s map fill.
pub fn map_fill(state: &State) -> [(&'static str, u64, u64); 3] {
    let compiled = state.compiled();
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    [
        (
            "prefixes_v4",
            count(compiled.v4.len()),
            u64::from(compiled.capacity.v4),
        ),
        (
            "prefixes_v6",
            count(compiled.v6.len()),
            u64::from(compiled.capacity.v6),
        ),
        (
            "rule_slots",
            count(compiled.rule_lists().len()),
            u64::from(RULE_SLOTS),
        ),
    ]
}
