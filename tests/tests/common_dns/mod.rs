//! Real DNS servers for the resolver tests: dnsmasq on loopback (one per test, own port, own
//! directory, killed on drop even when the test panics), plus two tiny stand-ins dnsmasq cannot
//! play: a server that answers SERVFAIL to everything and a socket that never answers.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "enforcer-dns-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("creating a temp dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What one dnsmasq instance serves: command-line records and hosts files.
#[derive(Clone, Debug, Default)]
pub struct Zone {
    args: Vec<String>,
    hosts: Vec<String>,
}

impl Zone {
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers for names below `domain` come only from this instance: unknown names are NXDOMAIN,
    /// a missing family is NOERROR without data (without it dnsmasq would say REFUSED).
    pub fn local(mut self, domain: &str) -> Self {
        self.args.push(format!("--local=/{domain}/"));
        self
    }

    /// `--host-record=name,addr[,addr6][,ttl]`.
    pub fn host(mut self, name: &str, addresses: &[&str], ttl: Option<u32>) -> Self {
        let mut arg = format!("--host-record={name}");
        for a in addresses {
            arg.push(',');
            arg.push_str(a);
        }
        if let Some(ttl) = ttl {
            arg.push_str(&format!(",{ttl}"));
        }
        self.args.push(arg);
        self
    }

    /// `--cname=alias,target[,ttl]` (the target must be a name this instance knows).
    pub fn cname(mut self, alias: &str, target: &str, ttl: Option<u32>) -> Self {
        let mut arg = format!("--cname={alias},{target}");
        if let Some(ttl) = ttl {
            arg.push_str(&format!(",{ttl}"));
        }
        self.args.push(arg);
        self
    }

    /// `--address=/name/addr`: the name and everything below it.
    pub fn address(mut self, name: &str, address: &str) -> Self {
        self.args.push(format!("--address=/{name}/{address}"));
        self
    }

    /// TTL of hosts-file and host-record answers without their own.
    pub fn local_ttl(mut self, ttl: u32) -> Self {
        self.args.push(format!("--local-ttl={ttl}"));
        self
    }

    /// A hosts file (`ADDR NAME` lines), loaded with `--addn-hosts`.
    pub fn hosts_file(mut self, content: String) -> Self {
        self.hosts.push(content);
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }
}

/// A dnsmasq instance on 127.0.0.1:<port>.
pub struct Dnsmasq {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: TempDir,
    generation: usize,
}

impl Dnsmasq {
    /// Starts dnsmasq for `zone` on a free port and waits until it answers.
    pub fn start(zone: &Zone) -> Self {
        let mut dir = TempDir::new("dnsmasq");
        for _ in 0..10 {
            let port = free_port();
            let mut server = Self {
                child: None,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                dir,
                generation: 0,
            };
            match server.spawn(zone) {
                Ok(()) => return server,
                // Another test took the port between probing and binding: try another one.
                Err(message) if message.contains("Address already in use") => {
                    dir = std::mem::replace(&mut server.dir, TempDir::new("unused"));
                }
                Err(message) => panic!("dnsmasq did not start: {message}"),
            }
        }
        panic!("dnsmasq: no free port after 10 tries");
    }

    /// Replaces the served records: stops this instance and starts a new one on the same port.
    pub fn restart(&mut self, zone: &Zone) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn(zone) {
                Ok(()) => return,
                Err(message)
                    if message.contains("Address already in use") && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(message) => panic!("dnsmasq did not restart: {message}"),
            }
        }
    }

    /// Rewrites the first hosts file of the running instance and makes dnsmasq re-read it
    /// (SIGHUP), without a restart.
    pub fn rewrite_hosts(&self, content: &str) {
        let path = self.hosts_path(self.generation, 0);
        fs::write(&path, content).expect("rewriting the hosts file");
        let pid = self
            .child
            .as_ref()
            .map(Child::id)
            .expect("dnsmasq is running");
        let pid = libc::pid_t::try_from(pid).expect("pid fits");
        // SAFETY: plain kill(2) on our own child.
        let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
        assert_eq!(rc, 0, "SIGHUP to dnsmasq");
        // dnsmasq handles signals from its main loop; give it a moment.
        std::thread::sleep(Duration::from_millis(300));
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join(format!("log.{}", self.generation)))
            .unwrap_or_default()
    }

    fn hosts_path(&self, generation: usize, index: usize) -> PathBuf {
        self.dir.path().join(format!("hosts.{generation}.{index}"))
    }

    fn spawn(&mut self, zone: &Zone) -> Result<(), String> {
        self.generation += 1;
        let generation = self.generation;
        let log = self.dir.path().join(format!("log.{generation}"));
        let stderr_path = self.dir.path().join(format!("stderr.{generation}"));
        let stderr = File::create(&stderr_path).map_err(|e| e.to_string())?;
        let mut command = Command::new(DNSMASQ);
        command
            .arg("--keep-in-foreground")
            .arg("--conf-file=/dev/null")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg("--bind-interfaces")
            .arg("--listen-address=127.0.0.1")
            .arg(format!("--port={}", self.addr.port()))
            .arg(format!(
                "--pid-file={}",
                self.dir.path().join(format!("pid.{generation}")).display()
            ))
            .arg(format!("--log-facility={}", log.display()))
            .arg("--log-queries");
        for (index, content) in zone.hosts.iter().enumerate() {
            let path = self.hosts_path(generation, index);
            fs::write(&path, content).map_err(|e| e.to_string())?;
            command.arg(format!("--addn-hosts={}", path.display()));
        }
        command
            .args(&zone.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = command
            .spawn()
            .map_err(|e| format!("running {DNSMASQ}: {e}"))?;
        self.child = Some(child);

        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let mut message = String::new();
                if let Ok(mut f) = File::open(&stderr_path) {
                    let _ = f.read_to_string(&mut message);
                }
                return Err(format!("exited with {status}: {message}"));
            }
            if answers(self.addr) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err("no answer within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let Ok(udp) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = udp.local_addr() else {
            continue;
        };
        if TcpListener::bind(addr).is_ok() {
            return addr.port();
        }
    }
    panic!("no free port on 127.0.0.1");
}

/// A DNS query for `name` (A), with the given id.
pub fn query_packet(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        p.push(u8::try_from(label.len()).expect("short label"));
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    p
}

/// Whether something at `addr` answers a DNS query over UDP.
fn answers(addr: SocketAddr) -> bool {
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
    if socket
        .send_to(&query_packet(0x4242, "probe.invalid", 1), addr)
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(socket.recv_from(&mut buf), Ok((n, _)) if n >= 12 && buf[..2] == [0x42, 0x42])
}

/// A UDP server answering every query with one response code (2 = SERVFAIL), echoing the question.
pub struct RcodeServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub queries: Arc<AtomicUsize>,
}

impl RcodeServer {
    pub fn start(rcode: u8) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("binding the stand-in server");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let addr = socket.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        let thread = {
            let stop = Arc::clone(&stop);
            let queries = Arc::clone(&queries);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    queries.fetch_add(1, Ordering::Relaxed);
                    if let Some(reply) = rcode_reply(&buf[..n], rcode) {
                        let _ = socket.send_to(&reply, from);
                    }
                }
            })
        };
        Self {
            addr,
            stop,
            thread: Some(thread),
            queries,
        }
    }
}

impl Drop for RcodeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn rcode_reply(query: &[u8], rcode: u8) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut end = 12;
    loop {
        let len = usize::from(*query.get(end)?);
        end += 1 + len;
        if len == 0 {
            break;
        }
    }
    end += 4;
    let question = query.get(12..end)?;
    let rd = query[2] & 0x01;
    let mut reply = Vec::with_capacity(end);
    reply.extend_from_slice(&query[..2]);
    reply.push(0x80 | rd);
    reply.push(0x80 | (rcode & 0x0f));
    reply.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    reply.extend_from_slice(question);
    Some(reply)
}

/// A bound UDP socket that never reads or answers: a dead resolver that does not even send ICMP.
pub struct SilentServer {
    pub addr: SocketAddr,
    _socket: UdpSocket,
}

impl SilentServer {
    pub fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("binding the silent socket");
        let addr = socket.local_addr().expect("local addr");
        Self {
            addr,
            _socket: socket,
        }
    }
}

/// The `enforcer` binary: `ENFORCER_BIN`, else target/<profile>/enforcer next to this test.
pub fn enforcer_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("ENFORCER_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let path = dir.join("enforcer");
    assert!(
        path.is_file(),
        "{} not found: build it first (`cargo build -p enforcer`, same profile) or set ENFORCER_BIN",
        path.display()
    );
    path
}
