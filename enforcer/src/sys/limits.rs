//! The limit on open descriptors (RLIMIT_NOFILE).

use std::io;

/// The soft limit (what the process may open now) and the hard one (how far it may raise it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFiles {
    pub soft: u64,
    pub hard: u64,
}

/// The limits in force.
pub fn open_files() -> io::Result<OpenFiles> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OpenFiles {
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

/// Raises the soft limit to the hard one (no privilege needed) and returns the limits now in
/// force. Service managers start services with a low soft limit (1,024 under systemd) and a
/// high hard one.
pub fn raise_open_files() -> io::Result<OpenFiles> {
    let limits = open_files()?;
    if limits.soft >= limits.hard {
        return Ok(limits);
    }
    let raised = libc::rlimit {
        rlim_cur: limits.hard,
        rlim_max: limits.hard,
    };
    // SAFETY: setrlimit reads one valid rlimit; a soft limit up to the hard one needs no
    // privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    open_files()
}
