//! Dropping capabilities once the program is loaded, attached and the sockets are bound: what
//! remains is CAP_BPF, which map reads and updates on the descriptors we hold need (with
//! `kernel.unprivileged_bpf_disabled`, every bpf() call does).

/// `CAP_BPF` (include/uapi/linux/capability.h).
pub const CAP_BPF: u32 = 39;
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// Highest capability number any kernel defines today is 40; the bounding-set loop stops at the
/// first number the kernel does not know.
const CAP_MAX_PROBE: u32 = 63;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("dropping capabilities (capset): {0}")]
    Capset(std::io::Error),
}

/// Keeps only `keep` in the effective and permitted sets and drops everything else from the
/// bounding set (when allowed to: without CAP_SETPCAP the bounding set is left to the service
/// manager). Capabilities belong to threads and new threads inherit them: call this while the
/// process still has one thread, before the async runtime starts.
pub fn keep_only(keep: &[u32]) -> Result<(), PrivilegeError> {
    for cap in 0..=CAP_MAX_PROBE {
        if keep.contains(&cap) {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        if rc != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EINVAL) {
                break; // past the last capability this kernel knows
            }
            tracing::debug!(%error, cap, "bounding set left as it is");
            break;
        }
    }
    let mut data = [CapData::default(); 2];
    for &cap in keep {
        let (word, bit) = ((cap / 32) as usize, cap % 32);
        if let Some(d) = data.get_mut(word) {
            d.effective |= 1 << bit;
            d.permitted |= 1 << bit;
        }
    }
    capset(&data)
}

/// Clears every capability of the calling thread alone; the process's other threads keep
/// theirs. A thread that then reads files reads them as the daemon does once it has dropped
/// its capabilities (root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH is held to the
/// files' owners and modes like any user).
pub fn clear_for_this_thread() -> Result<(), PrivilegeError> {
    capset(&[CapData::default(); 2])
}

/// Sets the calling thread's capabilities (capset(2) acts on the calling thread only).
fn capset(data: &[CapData; 2]) -> Result<(), PrivilegeError> {
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: capset(2) with a valid version-3 header and two data words, as the ABI requires.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(PrivilegeError::Capset(std::io::Error::last_os_error()));
    }
    Ok(())
}
