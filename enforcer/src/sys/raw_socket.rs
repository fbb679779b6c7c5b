//! Raw IPv4 and IPv6 sockets that send whole IP packets, headers included (CAP_NET_RAW).

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

/// `IPV6_HDRINCL` (include/uapi/linux/in6.h): the packet given carries its own IPv6 header.
const IPV6_HDRINCL: libc::c_int = 36;

pub struct RawSockets {
    v4: OwnedFd,
    v6: OwnedFd,
}

fn raw_socket(domain: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before it is wrapped.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn socklen<T>() -> libc::socklen_t {
    // The structures passed here are a few dozen bytes.
    libc::socklen_t::try_from(size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

impl RawSockets {
    /// Needs CAP_NET_RAW.
    pub fn open() -> io::Result<Self> {
        let v4 = raw_socket(libc::AF_INET)?;
        let v6 = raw_socket(libc::AF_INET6)?;
        let on: libc::c_int = 1;
        // SAFETY: setsockopt with a pointer to a live c_int and its size.
        let rc = unsafe {
            libc::setsockopt(
                v6.as_raw_fd(),
                libc::IPPROTO_IPV6,
                IPV6_HDRINCL,
                (&on as *const libc::c_int).cast(),
                socklen::<libc::c_int>(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { v4, v6 })
    }

    /// Sends `packet` (a whole IP packet of `dst`'s family) towards `dst`.
    pub fn send(&self, dst: IpAddr, packet: &[u8]) -> io::Result<()> {
        let rc = match dst {
            IpAddr::V4(ip) => {
                // SAFETY: an all-zero sockaddr_in is valid; the fields are filled below.
                let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                addr.sin_family = libc::sa_family_t::try_from(libc::AF_INET).unwrap_or_default();
                addr.sin_addr.s_addr = u32::from_ne_bytes(ip.octets());
                // SAFETY: sendto with the packet buffer and a sockaddr_in of the right size.
                unsafe {
                    libc::sendto(
                        self.v4.as_raw_fd(),
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&addr as *const libc::sockaddr_in).cast(),
                        socklen::<libc::sockaddr_in>(),
                    )
                }
            }
            IpAddr::V6(ip) => {
                // SAFETY: an all-zero sockaddr_in6 is valid; the fields are filled below.
                let mut addr: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
                addr.sin6_family = libc::sa_family_t::try_from(libc::AF_INET6).unwrap_or_default();
                addr.sin6_addr.s6_addr = ip.octets();
                // SAFETY: sendto with the packet buffer and a sockaddr_in6 of the right size.
                unsafe {
                    libc::sendto(
                        self.v6.as_raw_fd(),
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&addr as *const libc::sockaddr_in6).cast(),
                        socklen::<libc::sockaddr_in6>(),
                    )
                }
            }
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
