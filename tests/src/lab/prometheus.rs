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
        let rule_files = rules.map_or_else(String::new, |r| {
            format!("rule_files:\n  - {}\n", r.display())
        });
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{rule_files}\
             scrape_configs:\n  - job_name: enforcer\n    static_configs:\n      - targets: \
             [\"{METRICS_ADDR}\"]\n"
        );
        let prometheus =
            Prometheus::start_config(lab, "prometheus", &config, &[], PROMETHEUS_ADDR.parse()?)?;
        prometheus.wait_scrapes(lab, 2, Duration::from_secs(60))?;
        Ok(prometheus)
    }

    /// Starts Prometheus in `lab`'s gateway namespace, listening on `addr`, with `config` as
    /// prometheus.yml and `files` (name, text) beside it (rule files, file_sd targets) in the
    /// lab directory `name`. Returns once it answers queries.
    pub fn start_config(
        lab: &Lab,
        name: &str,
        config: &str,
        files: &[(&str, &str)],
        addr: SocketAddr,
    ) -> Result<Prometheus> {
        let dir = lab.dir().join(name);
        std::fs::create_dir_all(&dir)?;
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        for (file, text) in files {
            std::fs::write(dir.join(file), text)?;
        }
        let child = Command::new(tools::path(tools::IP)?)
            .args(["netns", "exec", &lab.netns(Side::Gateway)])
            .arg(tools::path(tools::PROMETHEUS)?)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting prometheus {name}"))?;
        let mut prometheus = Prometheus { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while prometheus
            .query(lab, "vector(1)")
            .ok()
            .and_then(|v| scalar(&v))
            != Some(1.0)
        {
            if let Some(status) = prometheus.child.try_wait()? {
                bail!("prometheus {name} exited ({status}); config:\n{config}");
            }
            if Instant::now() > deadline {
                bail!("prometheus {name} did not answer on {addr} within 60 s");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(prometheus)
    }

    /// Waits until the first value of the instant query `expr` is at least `min`.
    pub fn wait_until(&self, lab: &Lab, expr: &str, min: f64, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let value = self
                .query(lab, expr)
                .ok()
                .and_then(|v| scalar(&v))
                .unwrap_or(f64::NEG_INFINITY);
            if value >= min {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{expr} did not reach {min} in {limit:?} (last: {value})");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Waits until Prometheus holds `count` scrapes of the daemon from the last minute.
    pub fn wait_scrapes(&self, lab: &Lab, count: usize, limit: Duration) -> Result<()> {
        self.wait_until(
            lab,
            "count_over_time(up{job=\"enforcer\"}[1m])",
            count as f64,
            limit,
        )
        .with_context(|| format!("Prometheus did not scrape the daemon {count} times"))
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
