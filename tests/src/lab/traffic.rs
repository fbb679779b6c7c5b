//! Real traffic through the lab: a server that counts what reaches it, and client probes.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

use super::netns;

/// What a TCP connection attempt from the client came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Connect {
    /// The handshake completed: the SYN reached the server and its answer came back.
    Connected,
    /// No answer within the timeout (what a dropped SYN looks like).
    TimedOut,
    /// The server answered with a reset: reachable, nothing listening.
    Refused,
    /// Anything else (refused, unreachable...), with the error.
    Failed(String),
}

#[derive(Default)]
struct Counts {
    udp: HashMap<SocketAddr, u64>,
    tcp: HashMap<SocketAddr, u64>,
}

/// UDP sockets and TCP listeners bound in the server namespace, counting datagrams received
/// and connections accepted per local address. Stops when dropped.
pub struct Server {
    counts: Arc<Mutex<Counts>>,
    /// Passes of the receiving loop over every socket, completed so far.
    passes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

const POLL: Duration = Duration::from_millis(2);

impl Server {
    /// Binds every address in the namespace at `netns_path` and starts counting; returns once
    /// all sockets are bound.
    pub fn start(netns_path: PathBuf, udp: &[SocketAddr], tcp: &[SocketAddr]) -> Result<Server> {
        let counts = Arc::new(Mutex::new(Counts::default()));
        let passes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let (udp, tcp) = (udp.to_vec(), tcp.to_vec());
        let thread = {
            let (counts, passes, stop) =
                (Arc::clone(&counts), Arc::clone(&passes), Arc::clone(&stop));
            netns::spawn_in(netns_path, "lab-server", move || {
                let bound = bind_all(&udp, &tcp);
                let (udp_sockets, listeners) = match bound {
                    Ok(sockets) => {
                        let _ = ready_tx.send(Ok(()));
                        sockets
                    }
                    Err(e) => {
                        let message = format!("{e:#}");
                        let _ = ready_tx.send(Err(e));
                        bail!(message);
                    }
                };
                serve(&udp_sockets, &listeners, &counts, &passes, &stop)
            })?
        };
        let mut server = Server {
            counts,
            passes,
            stop,
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(server),
            Ok(Err(e)) => Err(e.context("starting the lab server")),
            Err(_) => {
                let outcome = server.shutdown();
                Err(anyhow!("the lab server did not start: {outcome:?}"))
            }
        }
    }

    /// Datagrams received so far on `addr`.
    pub fn udp_count(&self, addr: SocketAddr) -> u64 {
        self.counts
            .lock()
            .map(|c| c.udp.get(&addr).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Connections accepted so far on `addr`.
    pub fn tcp_accepted(&self, addr: SocketAddr) -> u64 {
        self.counts
            .lock()
            .map(|c| c.tcp.get(&addr).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Waits until every `(addr, at_least)` has been reached on UDP or `timeout` passes;
    /// returns whether all were reached.
    pub fn wait_udp(&self, targets: &[(SocketAddr, u64)], timeout: Duration) -> bool {
        wait_until(timeout, || {
            targets.iter().all(|&(a, n)| self.udp_count(a) >= n)
        })
    }

    /// Waits until every `(addr, at_least)` has been reached on TCP or `timeout` passes;
    /// returns whether all were reached.
    pub fn wait_tcp(&self, targets: &[(SocketAddr, u64)], timeout: Duration) -> bool {
        wait_until(timeout, || {
            targets.iter().all(|&(a, n)| self.tcp_accepted(a) >= n)
        })
    }

    /// Waits until the server has read every socket once more from now on, so that whatever
    /// had reached any socket before this call is counted; false if it stopped serving.
    pub fn settle(&self) -> bool {
        let target = self.passes.load(Ordering::SeqCst) + 2;
        wait_until(Duration::from_secs(5), || {
            self.passes.load(Ordering::SeqCst) >= target
        })
    }

    fn shutdown(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| anyhow!("the lab server thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("lab: server: {e:#}");
        }
    }
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

type Sockets = (Vec<(SocketAddr, UdpSocket)>, Vec<(SocketAddr, TcpListener)>);

fn bind_all(udp: &[SocketAddr], tcp: &[SocketAddr]) -> Result<Sockets> {
    let mut udp_sockets = Vec::new();
    for &addr in udp {
        let socket = UdpSocket::bind(addr).with_context(|| format!("binding UDP {addr}"))?;
        socket.set_nonblocking(true)?;
        udp_sockets.push((addr, socket));
    }
    let mut listeners = Vec::new();
    for &addr in tcp {
        let listener = TcpListener::bind(addr).with_context(|| format!("binding TCP {addr}"))?;
        listener.set_nonblocking(true)?;
        listeners.push((addr, listener));
    }
    Ok((udp_sockets, listeners))
}

fn serve(
    udp: &[(SocketAddr, UdpSocket)],
    tcp: &[(SocketAddr, TcpListener)],
    counts: &Mutex<Counts>,
    passes: &AtomicU64,
    stop: &AtomicBool,
) -> Result<()> {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        for (addr, socket) in udp {
            loop {
                match socket.recv_from(&mut buf) {
                    Ok(_) => {
                        let mut c = counts.lock().map_err(|_| anyhow!("counts poisoned"))?;
                        *c.udp.entry(*addr).or_default() += 1;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e).with_context(|| format!("receiving on {addr}")),
                }
            }
        }
        for (addr, listener) in tcp {
            loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        drop(stream);
                        let mut c = counts.lock().map_err(|_| anyhow!("counts poisoned"))?;
                        *c.tcp.entry(*addr).or_default() += 1;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e).with_context(|| format!("accepting on {addr}")),
                }
            }
        }
        passes.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// Sends `count` small datagrams to `dst` from the calling thread's namespace.
pub fn send_udp(dst: SocketAddr, count: usize) -> Result<usize> {
    let local: SocketAddr = match dst {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).context("binding a client UDP socket")?;
    for i in 0..count {
        let payload = format!("enforcer lab datagram {i}");
        socket
            .send_to(payload.as_bytes(), dst)
            .with_context(|| format!("sending to {dst}"))?;
    }
    Ok(count)
}

/// One TCP connection attempt to `dst` from the calling thread's namespace.
pub fn tcp_connect(dst: SocketAddr, timeout: Duration) -> Connect {
    match TcpStream::connect_timeout(&dst, timeout) {
        Ok(stream) => {
            drop(stream);
            Connect::Connected
        }
        Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock => {
            Connect::TimedOut
        }
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Connect::Refused,
        Err(e) => Connect::Failed(e.to_string()),
    }
}

/// A steady UDP flow from the client: one datagram to each destination every `interval`, until
/// dropped. For "no packet of the flow gets through while ..." checks.
pub struct UdpStream {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<u64>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl UdpStream {
    pub fn start(netns_path: PathBuf, dsts: &[SocketAddr], interval: Duration) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(0u64));
        let dsts = dsts.to_vec();
        let thread = {
            let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
            netns::spawn_in(netns_path, "lab-stream", move || {
                let v4 = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
                let v6 = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))?;
                while !stop.load(Ordering::SeqCst) {
                    for dst in &dsts {
                        let socket = if dst.is_ipv4() { &v4 } else { &v6 };
                        // A send may fail transiently (no neighbour yet); the flow goes on.
                        let _ = socket.send_to(b"enforcer lab stream", dst);
                    }
                    if let Ok(mut n) = sent.lock() {
                        *n += 1;
                    }
                    std::thread::sleep(interval);
                }
                Ok(())
            })?
        };
        Ok(Self {
            stop,
            sent,
            thread: Some(thread),
        })
    }

    /// Rounds sent so far (one datagram per destination each).
    pub fn rounds(&self) -> u64 {
        self.sent.lock().map(|n| *n).unwrap_or(0)
    }
}

impl Drop for UdpStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sends one raw Ethernet frame (header included) out of `iface`, from the calling thread's
/// namespace: for frames no socket of a higher layer would send (a truncated IP header, an
/// ether type that is not IP).
pub fn send_frame(iface: &str, frame: &[u8]) -> Result<()> {
    let name = std::ffi::CString::new(iface)?;
    // SAFETY: a valid NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        bail!("no interface {iface}: {}", std::io::Error::last_os_error());
    }
    // SAFETY: plain socket(2); the descriptor is owned (and closed) by `socket` below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        bail!("socket(AF_PACKET): {}", std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; all zeros is a valid value.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_ifindex = i32::try_from(index)?;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(frame.get(..6).unwrap_or(&[0xff; 6]));
    // SAFETY: `frame` is valid for its length and `to` for its size; `socket` is open.
    let sent = unsafe {
        libc::sendto(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            std::ptr::from_ref(&to).cast(),
            u32::try_from(std::mem::size_of::<libc::sockaddr_ll>())?,
        )
    };
    if usize::try_from(sent).ok() != Some(frame.len()) {
        bail!(
            "sending a frame on {iface}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
