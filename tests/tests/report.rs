//! `enforcer report` end to end: two fake gateways export enforcer_site_* series whose counters
//! move by known amounts (one restarts), a real Prometheus scrapes them every second, and the
//! real binary's CSV must equal the exporters' growth exactly; its HTML must name every site,
//! platform and stage, hold its charts, and render in headless Chromium to a page that is not
//! blank.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tests::lab::enforcer_binary;
use tests::tools;

/// A site label no daemon would accept, as a hostile Prometheus could hand over.
const EVIL_SITE: &str = "\"<script>alert(1)</script>\",x";

/// (site, platform, action, packets at each phase); bytes are packets x 1,000 + 7 per packet
/// of growth, so they follow the same resets.
type Counter = (&'static str, &'static str, &'static str, [u64; 3]);

/// Gateway 1. b/teams/monitor restarts in the last phase (50 -> 90 -> 12: grows 40 + 12).
const GW1: &[Counter] = &[
    ("a", "teams", "drop", [100, 160, 230]),
    ("a", "teams", "monitor", [40, 40, 40]),
    ("a", "zoom", "monitor", [10, 25, 40]),
    ("b", "teams", "monitor", [50, 90, 12]),
    ("b", "zoom", "monitor", [0, 7, 7]),
    ("other", "teams", "monitor", [3, 3, 8]),
    ("other", "zoom", "monitor", [0, 0, 0]),
];
/// Gateway 2: the same series are summed with gateway 1's.
const GW2: &[Counter] = &[
    ("a", "teams", "drop", [1000, 1001, 1010]),
    ("b", "teams", "monitor", [5, 6, 7]),
    (EVIL_SITE, "zoom", "monitor", [0, 2, 3]),
];
/// (site, platform, action at 1, actions at 0): the stage gauges of both gateways. Site a once
/// monitored Teams and drops it now.
const STAGES: &[(&str, &str, &str, &[&str])] = &[
    ("a", "teams", "drop", &["monitor"]),
    ("a", "zoom", "monitor", &[]),
    ("b", "teams", "monitor", &[]),
    ("b", "zoom", "monitor", &[]),
    ("other", "teams", "monitor", &[]),
    ("other", "zoom", "monitor", &[]),
    (EVIL_SITE, "zoom", "monitor", &[]),
];

fn bytes(packets: u64) -> u64 {
    packets * 1_000 + 7
}

/// Exposition-format label value.
fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

fn exposition(counters: &[Counter], phase: usize) -> String {
    let mut text = String::from(
        "# TYPE enforcer_site_packets_total counter\n# TYPE enforcer_site_bytes_total counter\n\
         # TYPE enforcer_site_stage gauge\n",
    );
    for (site, platform, action, values) in counters {
        let labels = format!(
            "{{site={},platform={},action={}}}",
            quoted(site),
            quoted(platform),
            quoted(action)
        );
        let packets = values[phase];
        text.push_str(&format!("enforcer_site_packets_total{labels} {packets}\n"));
        text.push_str(&format!(
            "enforcer_site_bytes_total{labels} {}\n",
            bytes(packets)
        ));
    }
    for (site, platform, on, off) in STAGES {
        if !counters.iter().any(|c| c.0 == *site && c.1 == *platform) {
            continue;
        }
        for (action, value) in std::iter::once((on, 1)).chain(off.iter().map(|a| (a, 0))) {
            text.push_str(&format!(
                "enforcer_site_stage{{site={},platform={},action={}}} {value}\n",
                quoted(site),
                quoted(platform),
                quoted(action)
            ));
        }
    }
    text
}

/// Growth over the phases, a fall counting as a restart from 0.
fn growth(values: &[u64; 3]) -> u64 {
    values
        .windows(2)
        .map(|w| if w[1] >= w[0] { w[1] - w[0] } else { w[1] })
        .sum()
}

/// The rows the CSV must hold: (site, platform, action) -> (stage, packets, bytes).
fn expected() -> BTreeMap<(String, String, String), (String, u64, u64)> {
    let mut rows = BTreeMap::new();
    for (site, platform, action, values) in GW1.iter().chain(GW2) {
        let stage = STAGES
            .iter()
            .find(|s| s.0 == *site && s.1 == *platform)
            .unwrap()
            .2;
        let bytes_values = values.map(bytes);
        let row = rows
            .entry((site.to_string(), platform.to_string(), action.to_string()))
            .or_insert((stage.to_owned(), 0, 0));
        row.1 += growth(values);
        row.2 += growth(&bytes_values);
    }
    rows
}

/// What a fake gateway serves, and how many scrapes it answered in the current phase.
struct Exporter {
    counters: &'static [Counter],
    phase: usize,
    scrapes_in_phase: usize,
}

/// Everything the test started; stopped and removed when dropped, even after a failed assert.
struct Harness {
    dir: PathBuf,
    prometheus: Option<Child>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(mut child) = self.prometheus.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Harness {
    fn new(name: &str) -> Harness {
        let dir = std::env::temp_dir().join(format!("report-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Harness {
            dir,
            prometheus: None,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        }
    }

    /// A real Prometheus on a free port scraping `targets` every second, with its storage in
    /// the harness' directory; its port once it is ready.
    fn start_prometheus(&mut self, targets: &[String]) -> u16 {
        let port = free_port();
        let config = self.dir.join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - \
                 job_name: enforcer\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.join("prometheus.log")).unwrap();
        self.prometheus = Some(
            Command::new(tools::require(tools::PROMETHEUS))
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    self.dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        wait_until("Prometheus ready", Duration::from_secs(30), || {
            http_get(port, "/-/ready").is_ok_and(|(status, _)| status == 200)
        });
        port
    }

    fn prometheus_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

/// Serves `exporter` on a free port of 127.0.0.1 until `stop`.
fn serve(exporter: Arc<Mutex<Exporter>>, stop: Arc<AtomicBool>) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let _ = answer(stream, &exporter);
        }
    });
    (addr, thread)
}

fn answer(stream: TcpStream, exporter: &Mutex<Exporter>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    // The request line and headers; no body.
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let body = {
        let mut e = exporter.lock().unwrap();
        e.scrapes_in_phase += 1;
        exposition(e.counters, e.phase)
    };
    let mut stream = reader.into_inner();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` from 127.0.0.1:`port`: the status code and body (HTTP/1.0, so no chunks).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    Ok((status, body.unwrap_or_default()))
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// RFC 4180 records (quoted fields with doubled quotes, CRLF line ends).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => assert_eq!(chars.next(), Some('\n'), "CR without LF"),
            (false, '\n') => panic!("a bare LF ends a record: {text:?}"),
            (false, c) => field.push(c),
        }
        if !quoted && c == '\r' {
            record.push(std::mem::take(&mut field));
            records.push(std::mem::take(&mut record));
        }
    }
    assert!(field.is_empty() && record.is_empty(), "{text:?}");
    records
}

/// Pixel statistics of a rendered page: per horizontal band, pixels that are not near-white,
/// and pixels that are clearly coloured (chart lines and bars, stage cells).
#[test]
fn report_from_a_real_prometheus_matches_the_counters_and_renders() {
    let started = Instant::now();
    let mut harness = Harness::new("real");
    let dir = harness.dir.clone();
    let exporters: Vec<Arc<Mutex<Exporter>>> = [GW1, GW2]
        .into_iter()
        .map(|counters| {
            Arc::new(Mutex::new(Exporter {
                counters,
                phase: 0,
                scrapes_in_phase: 0,
            }))
        })
        .collect();
    let mut targets = Vec::new();
    for exporter in &exporters {
        let (addr, thread) = serve(exporter.clone(), harness.stop.clone());
        harness.threads.push(thread);
        targets.push(addr.to_string());
    }
    let port = harness.start_prometheus(&targets);

    // Each phase is scraped at least 3 times from both gateways before the next one.
    for phase in 0..3 {
        for exporter in &exporters {
            let mut e = exporter.lock().unwrap();
            e.phase = phase;
            e.scrapes_in_phase = 0;
        }
        wait_until(
            &format!("3 scrapes of phase {phase}\n{}", harness.prometheus_log()),
            Duration::from_secs(30),
            || {
                exporters
                    .iter()
                    .all(|e| e.lock().unwrap().scrapes_in_phase >= 3)
            },
        );
    }
    // The last phase is in the database (the restarted series at its new value).
    wait_until("the last phase stored", Duration::from_secs(10), || {
        http_get(
            port,
            "/api/v1/query?query=sum(enforcer_site_packets_total%7Bsite%3D%22b%22%2Cplatform%3D%22teams%22%7D)",
        )
        .is_ok_and(|(_, body)| body.contains("\"19\""))
    });
    let scraped = started.elapsed();

    let html = dir.join("report.html");
    let csv = dir.join("report.csv");
    let run = Instant::now();
    let out = Command::new(enforcer_binary().unwrap())
        .arg("report")
        .arg("--prometheus")
        .arg(format!("http://127.0.0.1:{port}"))
        .args(["--since", "1h"])
        .arg("--out")
        .arg(&html)
        .arg("--csv")
        .arg(&csv)
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("ALL_PROXY")
        .output()
        .unwrap();
    let report_time = run.elapsed();
    assert!(
        out.status.success(),
        "enforcer report failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // CSV: exactly the exporters' growth, summed over both gateways, one row per series key.
    let text = std::fs::read_to_string(&csv).unwrap();
    let records = parse_csv(&text);
    assert_eq!(
        records[0],
        ["site", "platform", "action", "stage", "packets", "bytes"],
        "{text}"
    );
    let got: BTreeMap<(String, String, String), (String, u64, u64)> = records[1..]
        .iter()
        .map(|r| {
            (
                (r[0].clone(), r[1].clone(), r[2].clone()),
                (r[3].clone(), r[4].parse().unwrap(), r[5].parse().unwrap()),
            )
        })
        .collect();
    assert_eq!(got.len(), records.len() - 1, "duplicate rows:\n{text}");
    assert_eq!(got, expected(), "\n{text}");
    // The sums the test is about, spelled out.
    let key = |s: &str, p: &str, a: &str| (s.to_owned(), p.to_owned(), a.to_owned());
    assert_eq!(got[&key("a", "teams", "drop")].1, 130 + 10);
    assert_eq!(got[&key("b", "teams", "monitor")].1, 40 + 12 + 2);

    // HTML: every site, platform and stage; its charts; nothing from outside; nothing unescaped.
    let page = std::fs::read_to_string(&html).unwrap();
    for site in ["a", "b", "other"] {
        assert!(page.contains(&format!("<td>{site}</td>")), "site {site}");
    }
    for platform in ["teams", "zoom"] {
        assert!(
            page.contains(&format!("<td>{platform}</td>")),
            "platform {platform}"
        );
    }
    for stage in ["drop", "monitor"] {
        assert!(
            page.contains(&format!("<td class=\"{stage}\">{stage}</td>")),
            "stage {stage}"
        );
    }
    for ((site, platform, action), (stage, packets, bytes)) in expected() {
        if site == EVIL_SITE {
            continue;
        }
        let row = format!(
            "<tr><td>{site}</td><td>{platform}</td><td class=\"{stage}\">{stage}</td>\
             <td>{action}</td><td class=\"num\">{packets}</td><td class=\"num\">{bytes}</td></tr>"
        );
        assert!(page.contains(&row), "no row {row}");
    }
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!page.contains("<script"), "an unescaped label or a script");
    for outside in ["<link", "src=", "@import", "url("] {
        assert!(!page.contains(outside), "the page loads {outside}");
    }
    // A trend per platform and the bar chart per site.
    assert_eq!(page.matches("<svg").count(), 3);
    assert!(page.contains("Trend per hour"));
    let banned = page
        .split_once("Sites still using each banned platform")
        .and_then(|(_, rest)| rest.split_once("</ul>"))
        .unwrap()
        .0;
    assert!(banned.contains("<strong>teams</strong>"), "{banned}");
    assert!(
        !banned.contains("zoom"),
        "zoom is dropped nowhere: {banned}"
    );
    for site in ["a (", "b (", "other ("] {
        assert!(banned.contains(site), "{site} still uses teams: {banned}");
    }

    // Headless Chromium renders it; the picture has text and coloured charts down the page.
    let png_path = dir.join("report.png");
    let render = Instant::now();
    tests::render::screenshot(&html, &png_path, &dir.join("chromium")).unwrap();
    let render_time = render.elapsed();
    let picture = tests::render::analyse(&png_path, 8).unwrap();
    assert_eq!((picture.width, picture.height), (1280, 2400));
    let inked_bands = picture
        .inked_per_band
        .iter()
        .filter(|n| **n > 2_000)
        .count();
    assert!(
        inked_bands >= 5,
        "too little on the page: ink per band {:?}",
        picture.inked_per_band
    );
    assert!(
        picture.colourful > 5_000 && picture.distinct > 50,
        "no charts in the picture: {} coloured pixels, {} colours",
        picture.colourful,
        picture.distinct
    );
    eprintln!(
        "report test: scrapes {scraped:.1?}, report {report_time:.1?}, chromium render \
         {render_time:.1?}, total {:.1?}; ink per band {:?}, {} coloured pixels, {} colours",
        started.elapsed(),
        picture.inked_per_band,
        picture.colourful,
        picture.distinct
    );
    // Kept for a look when REPORT_TEST_KEEP names a directory.
    if let Some(keep) = std::env::var_os("REPORT_TEST_KEEP") {
        let keep = PathBuf::from(keep);
        std::fs::create_dir_all(&keep).unwrap();
        for file in ["report.html", "report.csv", "report.png"] {
            std::fs::copy(dir.join(file), keep.join(file)).unwrap();
        }
    }
    drop(harness);
}

#[test]
fn an_unreachable_prometheus_is_a_clear_error() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("report-unreachable-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(enforcer_binary().unwrap())
        .arg("report")
        .arg("--prometheus")
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("--out")
        .arg(dir.join("r.html"))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot reach Prometheus at http://127.0.0.1:{port}"
        )),
        "{stderr}"
    );
}

#[test]
fn a_server_that_is_not_prometheus_is_a_clear_error() {
    // An HTTP server that answers 404 to everything, and one that answers non-JSON.
    for (status, body, expect) in [
        ("404 Not Found", "nothing here", "answered HTTP 404"),
        (
            "200 OK",
            "<html>hello</html>",
            "not the JSON of the Prometheus API",
        ),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0; 4096];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
        let dir = std::env::temp_dir().join(format!("report-bad-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new(enforcer_binary().unwrap())
            .args(["report", "--prometheus"])
            .arg(format!("http://127.0.0.1:{port}"))
            .arg("--out")
            .arg(dir.join("r.html"))
            .output()
            .unwrap();
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expect), "{expect}: {stderr}");
    }
}

#[test]
fn no_site_series_writes_a_report_saying_so_and_exits_1() {
    // A Prometheus that scrapes nothing: no enforcer_site_* series at all.
    let mut harness = Harness::new("empty");
    let port = harness.start_prometheus(&[]);
    let html = harness.dir.join("report.html");
    let csv = harness.dir.join("report.csv");
    let out = Command::new(enforcer_binary().unwrap())
        .arg("report")
        .arg("--prometheus")
        .arg(format!("http://127.0.0.1:{port}/"))
        .args(["--since", "30m", "--out"])
        .arg(&html)
        .arg("--csv")
        .arg(&csv)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("has no enforcer_site_packets_total"),
        "{stderr}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("No site traffic recorded"), "{page}");
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap(),
        "site,platform,action,stage,packets,bytes\r\n"
    );
}
