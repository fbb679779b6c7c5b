//! Benchmark of policy changes on a live gateway, median and p99 over 100 changes each:
//! - `enforcer rules add` until the command returns: the daemon answers only once the maps
//!   enforce the rule, so this bounds "rules add to first dropped packet" from above (it
//!   includes starting the CLI process); a UDP stream to the target confirms that traffic stops;
//! - a policy file written until the last datagram of that stream gets through (the server
//!   counts in 2 ms rounds, which bounds the resolution).
//!
//! Needs root and a release build of `enforcer`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tests::lab::{INTERNET_V4, Lab, Server};

const CHANGES: usize = 100;
const STREAM_INTERVAL: Duration = Duration::from_micros(100);
/// How long after a change the stream is watched for stragglers.
const WATCH: Duration = Duration::from_millis(1500);
const POLL: Duration = Duration::from_micros(50);

const BASE: &str = "platform: base\nmatch:\n  - prefixes: [198.19.30.0/24]\n";

/// Waits until datagrams to `dst` stop arriving; returns when the last one arrived, relative
/// to `start`, or `None` if they never stopped within `WATCH`.
fn stopped_after(server: &Server, dst: SocketAddr, start: Instant) -> Option<Duration> {
    let mut last_count = server.udp_count(dst);
    let mut last_change = start;
    let deadline = start + WATCH;
    while Instant::now() < deadline {
        let count = server.udp_count(dst);
        if count != last_count {
            last_count = count;
            last_change = Instant::now();
        }
        // Quiet for 200 stream intervals: stopped.
        if Instant::now().duration_since(last_change) > STREAM_INTERVAL * 200 {
            return Some(last_change.duration_since(start));
        }
        std::thread::sleep(POLL);
    }
    None
}

/// Waits until datagrams to `dst` flow again (after a rule was removed).
fn flowing(server: &Server, dst: SocketAddr) -> Result<()> {
    let before = server.udp_count(dst);
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.udp_count(dst) < before + 10 {
        if Instant::now() > deadline {
            bail!("traffic to {dst} did not resume after the rule was removed");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{what:<34} {:>5} {:>9.2} {:>9.2} {:>9.2}",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap_or(&Duration::ZERO)),
    );
}

fn control(lab: &Lab, args: &[&str]) -> Result<()> {
    let out = lab.control(args)?;
    if !out.status.success() {
        bail!(
            "enforcer {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn main() -> Result<()> {
    let mut lab = Lab::new()?;
    let target = SocketAddr::new(IpAddr::V4(INTERNET_V4[2]), 3478);
    let server = lab.start_server(&[target], &[])?;
    let rules = lab.write_policy(&[("base.yaml", BASE)])?;
    lab.start_daemon(&rules)?;
    let _stream = lab.udp_stream(&[target], STREAM_INTERVAL)?;
    flowing(&server, target)?;

    let mut command_returns = Vec::with_capacity(CHANGES);
    for _ in 0..CHANGES {
        let start = Instant::now();
        control(
            &lab,
            &["rules", "add", "bench", "--prefix", "198.19.20.0/24"],
        )?;
        command_returns.push(start.elapsed());
        if stopped_after(&server, target, start).is_none() {
            bail!("traffic to {target} was not stopped by `rules add`");
        }
        control(&lab, &["rules", "remove", "bench"])?;
        flowing(&server, target)?;
    }

    let file = rules.join("bench.yaml");
    let mut by_file = Vec::with_capacity(CHANGES);
    for _ in 0..CHANGES {
        let start = Instant::now();
        write(
            &file,
            "platform: bench\nmatch:\n  - prefixes: [198.19.20.0/24]\n",
        )?;
        let Some(stopped) = stopped_after(&server, target, start) else {
            bail!("traffic to {target} was not stopped by the file change");
        };
        by_file.push(stopped);
        std::fs::remove_file(&file)?;
        flowing(&server, target)?;
    }

    println!("policy changes on a live gateway");
    println!(
        "{:<34} {:>5} {:>9} {:>9} {:>9}",
        "change", "n", "p50 ms", "p99 ms", "max ms"
    );
    report("rules add -> enforced (returned)", command_returns);
    report("file written -> last packet through", by_file);
    lab.stop_daemon()?;
    Ok(())
}
