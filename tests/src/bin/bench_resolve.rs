//! Benchmark of resolution and set updates: resolving 10,000 names (A and AAAA) against a local
//! dnsmasq; applying a 100,000-prefix diff to the maps; and the real daemon enforcing a policy
//! of those 10,000 names in a namespace lab: time until all 20,000 addresses are in force and
//! its peak memory. Needs root, dnsmasq and a release build of `enforcer`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use enforcer::compile::{self, EntryAddress};
use enforcer::datapath::Datapath;
use enforcer::policy::{Action, Entry, Location, Platform, Policy, Protocol};
use enforcer::resolve::{LookupResult, Resolver, ResolverConfig};
use ipnet::IpNet;
use tests::dns::{Dnsmasq, Zone};
use tests::lab::{Lab, Side};

const NAMES: usize = 10_000;
const DIFF: usize = 100_000;

fn name(i: usize) -> String {
    format!("n{i:05}.bench.example")
}

fn v4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 100 + (i / 250) as u8 % 100, (i % 250) as u8 + 1)
}

fn v6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0xbe, 0, 0, 0, (i >> 16) as u16, i as u16)
}

/// The bench names with both addresses, as a hosts file.
fn hosts_file() -> String {
    let mut text = String::with_capacity(NAMES * 60);
    for i in 0..NAMES {
        text.push_str(&format!("{} {}\n{} {}\n", v4(i), name(i), v6(i), name(i)));
    }
    text
}

/// What dnsmasq serves: the names, uncached, with a long TTL, and no log line per query.
fn zone(hosts: &str) -> Zone {
    Zone::new()
        .local("bench.example")
        .local_ttl(3600)
        .arg("--cache-size=0")
        .arg("--dns-forward-max=10000")
        .hosts_file(hosts.to_owned())
        .without_query_log()
}

fn location() -> Location {
    Location {
        path: "bench.yaml".into(),
        line: 1,
        column: 1,
    }
}

fn platform(name: &str, prefixes: Vec<IpNet>) -> Platform {
    Platform {
        data_date: None,
        feed: None,
        action_by_site: Vec::new(),
        name: name.into(),
        id: 0,
        description: None,
        reference: None,
        action: Action::Drop,
        entries: vec![Entry {
            index: 0,
            domains: vec![],
            prefixes,
            protocol: Protocol::Any,
            ports: vec![],
            enforce: enforcer::policy::Enforce::Both,
            location: location(),
        }],
        location: location(),
    }
}

fn resolve_in_process(port: u16) -> Result<(Duration, usize)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let resolver = Resolver::new(&ResolverConfig {
            servers: vec![SocketAddr::from(([127, 0, 0, 1], port))],
            ..ResolverConfig::default()
        })?;
        let names: Vec<String> = (0..NAMES).map(name).collect();
        let started = Instant::now();
        let results = resolver.resolve_many(names).await;
        let elapsed = started.elapsed();
        let addresses = results
            .iter()
            .map(|r| match &r.outcome {
                LookupResult::Ok(answer) => answer.addresses.len(),
                _ => 0,
            })
            .sum();
        Ok((elapsed, addresses))
    })
}

/// 100,000 IPv4 /32s, of which `shift` are replaced by new ones.
fn host_policy(shift: usize) -> Policy {
    let prefixes = (shift..DIFF + shift)
        .map(|i| {
            IpNet::from(IpAddr::V4(Ipv4Addr::from(
                0x0A00_0000u32 + 0x0100_0000 + i as u32,
            )))
        })
        .collect();
    Policy {
        platforms: vec![platform("bench", prefixes)],
    }
}

/// What applying the 100,000 /32s costs.
struct ApplyTimes {
    compile: Duration,
    /// Every prefix written: the generation not in force was empty.
    into_empty: Duration,
    /// Half of them replaced: the generation written held the previous policy (both full).
    diff: Duration,
    per_host: Duration,
}

fn apply_diff() -> Result<ApplyTimes> {
    let mut datapath = Datapath::load_unpinned()?;
    let first = compile::compile(&host_policy(0))?;
    let started = Instant::now();
    datapath.apply(&first)?;
    let into_empty = started.elapsed();
    // Applied again, `first` fills the other generation too: the next apply writes into a
    // generation that holds it, so only the diff is written.
    datapath.apply(&first)?;
    let started = Instant::now();
    let second = compile::compile(&host_policy(DIFF / 2))?;
    let compile_time = started.elapsed();
    let started = Instant::now();
    let stats = datapath.apply(&second)?;
    let diff = started.elapsed();
    if stats.inserted != DIFF / 2 || stats.removed != DIFF / 2 {
        bail!("unexpected diff: {stats:?}");
    }
    // A fast path for a few learned hosts on top of that: add_hosts + write_hosts.
    let mut compiled = second;
    let policy = host_policy(DIFF / 2);
    let hosts: Vec<EntryAddress> = (0..100)
        .map(|i| EntryAddress {
            platform: 0,
            entry: 0,
            net: IpNet::from(IpAddr::V4(Ipv4Addr::new(203, 0, 113, i as u8))),
        })
        .collect();
    let started = Instant::now();
    let changed = compile::add_hosts(&mut compiled, &policy, &hosts)?;
    datapath.write_hosts(&compiled, &changed)?;
    Ok(ApplyTimes {
        compile: compile_time,
        into_empty,
        diff,
        per_host: started.elapsed() / 100,
    })
}

fn daemon_run(hosts: &str) -> Result<(Duration, u64)> {
    let mut lab = Lab::new()?;
    let _dns = Dnsmasq::start_in(
        &lab.netns_path(Side::Gateway),
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        Some(53),
        &zone(hosts),
    )?;
    let mut yaml = String::from("platform: bench\nmatch:\n  - domains: [");
    for i in 0..NAMES {
        yaml.push_str(&name(i));
        yaml.push_str(if i + 1 < NAMES { ", " } else { "]\n" });
    }
    let rules = lab.write_policy(&[("bench.yaml", &yaml)])?;
    lab.add_daemon_args(&["--resolver", "127.0.0.1:53"]);
    let started = Instant::now();
    lab.start_daemon(&rules)?;
    let deadline = started + Duration::from_secs(300);
    loop {
        let enforced = lab
            .metrics()
            .map(|m| m.sum("enforcer_prefixes", &[("source", "dns")]))
            .unwrap_or(0.0);
        if enforced >= (2 * NAMES) as f64 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {enforced} of {} addresses enforced after 300 s",
                2 * NAMES
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = started.elapsed();
    let pid = lab.daemon_pid().context("no daemon")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmHWM")?;
    lab.stop_daemon()?;
    Ok((elapsed, hwm_kib))
}

fn main() -> Result<()> {
    let hosts = hosts_file();
    let local = Dnsmasq::start(&zone(&hosts))?;
    let port = local.addr.port();
    let mut runs = Vec::new();
    for _ in 0..3 {
        let (elapsed, addresses) = resolve_in_process(port)?;
        if addresses != 2 * NAMES {
            bail!("resolved {addresses} addresses, expected {}", 2 * NAMES);
        }
        runs.push(elapsed);
    }
    drop(local);
    runs.sort();
    let resolve = runs[1];
    let apply = apply_diff()?;
    let (to_enforced, hwm_kib) = daemon_run(&hosts)?;

    println!("resolution and set updates");
    println!(
        "resolve {NAMES} names (A+AAAA) against dnsmasq, in process: {:>8.1} ms (median of 3, {:.0} names/s)",
        resolve.as_secs_f64() * 1e3,
        NAMES as f64 / resolve.as_secs_f64()
    );
    println!(
        "compile a policy of {DIFF} /32s:                          {:>8.1} ms",
        apply.compile.as_secs_f64() * 1e3
    );
    println!(
        "apply {DIFF} prefixes into an empty generation (all written): {:>8.1} ms",
        apply.into_empty.as_secs_f64() * 1e3
    );
    println!(
        "apply a diff of {DIFF} prefixes (50k in, 50k out; both generations full): {:>8.1} ms",
        apply.diff.as_secs_f64() * 1e3
    );
    println!(
        "add one learned host (add_hosts + write_hosts):            {:>8.1} us",
        apply.per_host.as_secs_f64() * 1e6
    );
    println!(
        "daemon: start to all {} addresses enforced:            {:>8.1} ms",
        2 * NAMES,
        to_enforced.as_secs_f64() * 1e3
    );
    println!(
        "daemon: peak resident memory (VmHWM):                      {:>8.1} MiB",
        hwm_kib as f64 / 1024.0
    );
    Ok(())
}
