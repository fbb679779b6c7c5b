//! The two bpf(2) commands aya 0.14 does not expose: opening a pinned object and detaching a
//! link.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd as _, OwnedFd, RawFd};
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
    let attr = Attr {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    let fd = RawFd::try_from(bpf_syscall(BPF_OBJ_GET, &attr)?)
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
    bpf_syscall(BPF_LINK_DETACH, &Attr { link_fd }).map(|_| ())
}

fn bpf_syscall<T>(command: libc::c_long, attr: &T) -> io::Result<libc::c_long> {
    let size = libc::c_uint::try_from(size_of::<T>())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `attr` is a repr(C) prefix of `union bpf_attr` for `command`, valid for the call;
    // the kernel reads `size` bytes of it.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, command, attr as *const T, size) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}
