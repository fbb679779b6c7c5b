//! The two bpf(2) commands aya 0.14 does not expose: opening a pinned object and detaching a
//! link.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

/// BPF_OBJ_GET: opens a pinned object.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    const BPF_OBJ_GET: libc::c_long = 7;
    #[repr(C)]
    struct Attr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = Attr {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    let fd = RawFd::try_from(bpf_syscall(BPF_OBJ_GET, &mut attr)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// BPF_LINK_DETACH (kernel 5.9+): detaches the link from its hook at once, even while some
/// process still holds it open.
pub fn link_detach(link: RawFd) -> io::Result<()> {
    const BPF_LINK_DETACH: libc::c_long = 34;
    #[repr(C)]
    struct Attr {
        link_fd: u32,
    }
    let link_fd =
        u32::try_from(link).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    bpf_syscall(BPF_LINK_DETACH, &mut Attr { link_fd }).map(|_| ())
}

/// One bpf(2) command; the kernel reads `attr` and, for some commands (BPF_PROG_TEST_RUN),
/// writes results back into it.
fn bpf_syscall<T>(command: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    let size = libc::c_uint::try_from(size_of::<T>())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `attr` is a repr(C) prefix of `union bpf_attr` for `command`, valid and writable
    // for the call; pointers inside it point at buffers that outlive the call. The kernel reads
    // (and may write) `size` bytes of it.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, command, attr as *mut T, size) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// BPF_PROG_TEST_RUN of the XDP program `prog` once on `frame`, as if it had arrived on interface
/// `ifindex` (of the caller's network namespace). In live-frames mode (`live`, kernel 5.18+) a
/// frame the program passes enters that interface's receive path (conntrack, NAT, netfilter,
/// rp_filter), exactly like a received one. Returns the program's result.
pub fn xdp_run(prog: BorrowedFd<'_>, frame: &[u8], ifindex: u32, live: bool) -> io::Result<u32> {
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
    /// `struct xdp_md` as the test run takes it: the frame from offset 0, no metadata.
    #[repr(C)]
    struct XdpMd {
        data: u32,
        data_end: u32,
        data_meta: u32,
        ingress_ifindex: u32,
        rx_queue_index: u32,
        egress_ifindex: u32,
    }
    /// The `test` member of `union bpf_attr`.
    #[repr(C)]
    struct Attr {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        _pad: u32,
    }
    let invalid = |e| io::Error::new(io::ErrorKind::InvalidInput, e);
    let length = u32::try_from(frame.len()).map_err(invalid)?;
    let context = XdpMd {
        data: 0,
        data_end: length,
        data_meta: 0,
        ingress_ifindex: ifindex,
        rx_queue_index: 0,
        egress_ifindex: 0,
    };
    let mut attr = Attr {
        prog_fd: u32::try_from(prog.as_raw_fd()).map_err(invalid)?,
        retval: 0,
        data_size_in: length,
        data_size_out: 0,
        data_in: frame.as_ptr() as u64,
        data_out: 0,
        repeat: 1,
        duration: 0,
        ctx_size_in: u32::try_from(size_of::<XdpMd>()).map_err(invalid)?,
        ctx_size_out: 0,
        ctx_in: &raw const context as u64,
        ctx_out: 0,
        flags: if live { BPF_F_TEST_XDP_LIVE_FRAMES } else { 0 },
        cpu: 0,
        batch_size: 0,
        _pad: 0,
    };
    bpf_syscall(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(attr.retval)
}
