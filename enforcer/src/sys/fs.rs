//! statfs(2) and mount(2), for the BPF filesystem.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// The `f_type` (filesystem magic) of the filesystem holding `path`.
pub fn statfs_type(path: &Path) -> io::Result<i64> {
    let c_path = c_path(path)?;
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid NUL-terminated path and an out-parameter of the right type.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.f_type)
}

/// Mounts a BPF filesystem (mode 0700) at `at`.
pub fn mount_bpffs(at: &Path) -> io::Result<()> {
    let target = c_path(at)?;
    let kind = c"bpf";
    let options = c"mode=0700";
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            kind.as_ptr(),
            target.as_ptr(),
            kind.as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
