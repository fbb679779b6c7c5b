//! Attaching the program to interfaces through pinned BPF links, adopting links a previous
//! daemon left behind (fail-static), and removing them (`detach`).
//!
//! Layout under the `--bpffs` directory: `maps/<MAP>` and `links/<mode>/<interface>`. BPF
//! filesystems refuse names containing '.', so a '.' in an interface name (VLAN interfaces such
//! as eth0.100) is stored as ':', which interface names cannot contain.

use std::io;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};

use crate::sys;
use aya::programs::xdp::XdpLink;
use aya::programs::{Xdp, XdpMode};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeRequest {
    /// Native (driver) mode where the driver supports it, else generic (skb) mode.
    Auto,
    Native,
    Skb,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AttachMode {
    Native,
    Skb,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Skb => "skb",
        }
    }

    const ALL: [AttachMode; 2] = [AttachMode::Native, AttachMode::Skb];

    fn xdp(self) -> XdpMode {
        match self {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub interface: String,
    pub mode: AttachMode,
    /// The link was left by an earlier daemon and now runs this program.
    pub adopted: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("interface {interface}: attaching in {mode} mode: {source}")]
    Attach {
        interface: String,
        mode: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("interface {interface}: pinning the link: {message}")]
    Pin { interface: String, message: String },
}

/// The interface's index, as the kernel reports it on each packet (`/sys/class/net/IF/ifindex`).
pub fn ifindex(interface: &str) -> Result<u32, AttachError> {
    let path = Path::new("/sys/class/net").join(interface).join("ifindex");
    let text = std::fs::read_to_string(&path).map_err(|source| AttachError::Io {
        path: path.clone(),
        source,
    })?;
    text.trim().parse().map_err(|_| AttachError::Io {
        path,
        source: io::Error::new(io::ErrorKind::InvalidData, "not an interface index"),
    })
}

fn links_dir(bpffs: &Path) -> PathBuf {
    bpffs.join("links")
}

fn pin_name(interface: &str) -> String {
    interface.replace('.', ":")
}

fn interface_of(pin_name: &str) -> String {
    pin_name.replace(':', ".")
}

/// Pinned links in `bpffs`: (interface, mode, pin path).
pub fn pinned_links(bpffs: &Path) -> Result<Vec<(String, AttachMode, PathBuf)>, AttachError> {
    let mut out = Vec::new();
    for mode in AttachMode::ALL {
        let dir = links_dir(bpffs).join(mode.as_str());
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(AttachError::Io { path: dir, source }),
        };
        for entry in entries {
            let entry = entry.map_err(|source| AttachError::Io {
                path: dir.clone(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            out.push((interface_of(&name), mode, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Attaches `program` to every interface: an interface with a pinned link gets the program
/// swapped in atomically (no moment without enforcement); others get a new pinned link.
pub fn attach_all(
    program: &mut Xdp,
    bpffs: &Path,
    interfaces: &[String],
    request: ModeRequest,
) -> Result<Vec<Attached>, AttachError> {
    let dir = links_dir(bpffs);
    let pinned = pinned_links(bpffs)?;
    let mut attached = Vec::new();
    for interface in interfaces {
        if let Some((_, mode, path)) = pinned.iter().find(|(i, _, _)| i == interface) {
            match adopt(program, path) {
                Ok(()) => {
                    attached.push(Attached {
                        interface: interface.clone(),
                        mode: *mode,
                        adopted: true,
                    });
                    continue;
                }
                Err(reason) => {
                    // A link whose interface went away cannot be updated: replace it.
                    tracing::warn!(interface, %reason, "pinned link unusable; attaching anew");
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        let mode = attach_new(program, &dir, interface, request)?;
        attached.push(Attached {
            interface: interface.clone(),
            mode,
            adopted: false,
        });
    }
    Ok(attached)
}

fn adopt(program: &mut Xdp, path: &Path) -> Result<(), String> {
    let pinned = PinnedLink::from_pin(path).map_err(|e| e.to_string())?;
    let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| e.to_string())?;
    program.attach_to_link(link).map_err(|e| e.to_string())?;
    Ok(())
}

fn attach_new(
    program: &mut Xdp,
    dir: &Path,
    interface: &str,
    request: ModeRequest,
) -> Result<AttachMode, AttachError> {
    let candidates: &[AttachMode] = match request {
        ModeRequest::Auto => &[AttachMode::Native, AttachMode::Skb],
        ModeRequest::Native => &[AttachMode::Native],
        ModeRequest::Skb => &[AttachMode::Skb],
    };
    let mut last_error = None;
    for &mode in candidates {
        match program.attach(interface, mode.xdp()) {
            Ok(id) => {
                let pin_error = |message: String| AttachError::Pin {
                    interface: interface.to_string(),
                    message,
                };
                let link = program
                    .take_link(id)
                    .map_err(|e| pin_error(e.to_string()))?;
                let fd_link = FdLink::try_from(link).map_err(|e| pin_error(e.to_string()))?;
                let mode_dir = dir.join(mode.as_str());
                std::fs::create_dir_all(&mode_dir).map_err(|source| AttachError::Io {
                    path: mode_dir.clone(),
                    source,
                })?;
                let path = mode_dir.join(pin_name(interface));
                fd_link
                    .pin(&path)
                    .map_err(|e| pin_error(format!("{}: {e:?}", path.display())))?;
                return Ok(mode);
            }
            Err(source) => {
                tracing::debug!(interface, mode = mode.as_str(), %source, "attach failed");
                last_error = Some(AttachError::Attach {
                    interface: interface.to_string(),
                    mode: mode.as_str(),
                    source,
                });
            }
        }
    }
    Err(last_error.unwrap_or_else(|| AttachError::Pin {
        interface: interface.to_string(),
        message: "no attach mode to try".into(),
    }))
}

/// Detaches the pinned link at `path` from its interface at once (even if some process still
/// holds it open) and removes the pin.
pub fn detach_link(path: &Path) -> Result<(), AttachError> {
    let io_err = |source| AttachError::Io {
        path: path.to_path_buf(),
        source,
    };
    let link = sys::obj_get(path).map_err(io_err)?;
    sys::link_detach(link.as_raw_fd()).map_err(io_err)?;
    drop(link);
    std::fs::remove_file(path).map_err(io_err)
}
