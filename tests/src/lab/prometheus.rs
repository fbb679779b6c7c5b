//! A real Prometheus inside a lab's gateway namespace, scraping the daemon every second: what
//! an operator's monitoring sees, queried over its HTTP API.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::{Lab, METRICS_ADDR, Side};
use crate::tools;

/// Where Prometheus listens, inside the gateway namespace.
pub const PROMETHEUS_ADDR: &str = "127.0.0.1:19090";

pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Prometheus {
    /// Starts Prometheus in `lab`'s gateway namespace, scraping the daemon's metrics every
    /// second (with `rules` as its rule file, when given), and waits for two scrapes.
    pub fn start(lab: &Lab, rules: Option<&Path>) -> Result<Prometheus> {
        let dir = lab.dir().join("prometheus");
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("prometheus.yml");
        let rule_files = rules.map_or_else(String::new, |r| {
            format!("rule_files:\n  - {}\n", r.display())
        });
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{rule_files}\
                 scrape_configs:\n  - job_name: enforcer\n    static_configs:\n      - targets: \
                 [\"{METRICS_ADDR}\"]\n"
            ),
        )?;
        let addr: SocketAddr = PROMETHEUS_ADDR.parse()?;
        let child = Command::new(tools::path(tools::IP)?)
            .args(["netns", "exec", &lab.netns(Side::Gateway)])
            .arg(tools::path(tools::PROMETHEUS)?)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting prometheus")?;
        let prometheus = Prometheus { child, addr, dir };
        prometheus.wait_scrapes(lab, 2, Duration::from_secs(60))?;
        Ok(prometheus)
    }

    /// Waits until Prometheus holds `count` scrapes of the daemon from the last minute.
    pub fn wait_scrapes(&self, lab: &Lab, count: usize, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let scrapes = self
                .query(lab, "count_over_time(up{job=\"enforcer\"}[1m])")
                .ok()
                .and_then(|v| scalar(&v))
                .unwrap_or(0.0);
            if scrapes >= count as f64 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("Prometheus did not scrape the daemon {count} times in {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// An instant query's JSON answer.
    pub fn query(&self, lab: &Lab, expr: &str) -> Result<Value> {
        let addr = self.addr;
        let path = format!("/api/v1/query?query={}", encode(expr));
        let body = lab.in_netns(Side::Gateway, move || {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            // HTTP/1.0: a plain body, no chunks.
            write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok(text
                .split_once("\r\n\r\n")
                .map(|(_, body)| body.to_owned())
                .unwrap_or_default())
        })?;
        serde_json::from_str(&body).with_context(|| format!("{expr}: {body}"))
    }

    /// The URL `enforcer report --prometheus` takes (from inside the gateway namespace).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The value of an instant query's first result, as a number.
pub fn scalar(answer: &Value) -> Option<f64> {
    answer["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
}

/// A query string, percent-encoded.
pub fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
