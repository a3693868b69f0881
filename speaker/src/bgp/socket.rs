//! The TCP connection of one BGP session: a socket with the TCP MD5 signature (RFC 2385) for
//! the peer, the TTL (1 for a directly connected eBGP peer, 255 with multihop), bound to the
//! source address, connected without blocking; then `TCP_USER_TIMEOUT` once the hold time is
//! known, so a connection whose peer vanished cannot outlive the hold time either.
//!
//! Owns every socket option BGP needs and nothing else; it decides nothing.
//!
//! # TCP MD5 and `unsafe`
//!
//! No crate offers `TCP_MD5SIG` safely (socket2, nix and rustix have no such option). nix's
//! public [`nix::sockopt_impl!`] macro builds a socket option from a level, a name and a
//! `#[repr(C)]` value type; its generated `setsockopt` passes a pointer to the value and
//! `size_of` it, which is sound for any plain `#[repr(C)]` struct. The value type here,
//! [`Md5Sig`], mirrors the kernel's `struct tcp_md5sig` (`include/uapi/linux/tcp.h`) field by
//! field with only integer and byte-array fields, so it is built without `unsafe`, and its size
//! (216 bytes) is checked by a test, and a test makes the real `setsockopt` call. This module
//! writes no `unsafe` itself (the speaker's lint denies it everywhere but `l2::rawsock`): the
//! only `unsafe` is inside nix's macro.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use nix::sys::socket::setsockopt;
use nix::{setsockopt_impl, sockopt_impl};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

/// The kernel's longest MD5 key.
pub const MAX_KEY_LEN: usize = 80;

/// Why a connection could not be made. `as_str()` is a metric label; `Display` words for the
/// session state.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The socket could not be created or configured.
    #[error("cannot set up the TCP socket: {0}")]
    Socket(io::Error),
    /// The kernel has no TCP MD5 support (`ENOPROTOOPT`, e.g. no `CONFIG_TCP_MD5SIG`).
    #[error("TCP MD5 is not supported by this kernel (the peer needs a password)")]
    Md5Unsupported,
    /// The MD5 key was refused otherwise.
    #[error("cannot set the TCP MD5 key: {0}")]
    Md5(nix::Error),
    /// The key is longer than the kernel takes.
    #[error("the TCP MD5 password is longer than {MAX_KEY_LEN} bytes")]
    Md5TooLong,
    /// The source address could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: IpAddr,
        /// Why.
        source: io::Error,
    },
    /// The connect failed (refused, unreachable, reset).
    #[error("TCP connect to {addr} failed: {source}")]
    Connect {
        /// The peer.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// No answer within the connect timeout.
    #[error("TCP connect to {0} timed out")]
    Timeout(SocketAddr),
}

impl SocketError {
    /// Stable label.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Socket(_) => "socket",
            Self::Md5Unsupported => "md5_unsupported",
            Self::Md5(_) => "md5",
            Self::Md5TooLong => "md5_too_long",
            Self::Bind { .. } => "bind",
            Self::Connect { .. } => "connect",
            Self::Timeout(_) => "timeout",
        }
    }
}

/// `struct __kernel_sockaddr_storage`: 128 bytes, 8-byte aligned.
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SockaddrStorage([u8; 128]);

/// `struct tcp_md5sig` (`include/uapi/linux/tcp.h`): the peer's address, flags, prefix length,
/// key length, interface index and the key.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Md5Sig {
    addr: SockaddrStorage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: i32,
    key: [u8; MAX_KEY_LEN],
}

impl Md5Sig {
    /// The option value that signs segments to and from `peer` with `key`.
    pub fn new(peer: IpAddr, key: &[u8]) -> Result<Md5Sig, SocketError> {
        if key.len() > MAX_KEY_LEN {
            return Err(SocketError::Md5TooLong);
        }
        let mut addr = [0u8; 128];
        // sockaddr_in / sockaddr_in6: family in host order, then port (0) and address.
        match peer {
            IpAddr::V4(a) => {
                addr[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
                addr[4..8].copy_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                addr[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
                addr[8..24].copy_from_slice(&a.octets());
            }
        }
        let mut k = [0u8; MAX_KEY_LEN];
        k[..key.len()].copy_from_slice(key);
        Ok(Md5Sig {
            addr: SockaddrStorage(addr),
            flags: 0,
            prefixlen: 0,
            // At most MAX_KEY_LEN, checked above.
            keylen: u16::try_from(key.len()).unwrap_or(0),
            ifindex: 0,
            key: k,
        })
    }
}

sockopt_impl!(
    /// `TCP_MD5SIG` on a TCP socket.
    TcpMd5Sig,
    SetOnly,
    libc::IPPROTO_TCP,
    libc::TCP_MD5SIG,
    Md5Sig
);

/// How to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOpts {
    /// The peer.
    pub peer: SocketAddr,
    /// Bind to this address first.
    pub source: Option<IpAddr>,
    /// TCP MD5 key.
    pub password: Option<String>,
    /// IP TTL / hop limit of our segments.
    pub ttl: u32,
    /// Give up after this long.
    pub timeout: Duration,
}

/// Opens the connection.
pub async fn connect(opts: &ConnectOpts) -> Result<TcpStream, SocketError> {
    let domain = match opts.peer {
        SocketAddr::V4(_) => Domain::IPV4,
        SocketAddr::V6(_) => Domain::IPV6,
    };
    let sock =
        Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(SocketError::Socket)?;
    if let Some(pw) = opts.password.as_deref() {
        let v = Md5Sig::new(opts.peer.ip(), pw.as_bytes())?;
        setsockopt(&sock, TcpMd5Sig, &v).map_err(|e| match e {
            nix::Error::ENOPROTOOPT | nix::Error::ENOENT => SocketError::Md5Unsupported,
            other => SocketError::Md5(other),
        })?;
    }
    match opts.peer {
        SocketAddr::V4(_) => sock.set_ttl_v4(opts.ttl),
        SocketAddr::V6(_) => sock.set_unicast_hops_v6(opts.ttl),
    }
    .map_err(SocketError::Socket)?;
    sock.set_tcp_nodelay(true).map_err(SocketError::Socket)?;
    if let Some(src) = opts.source {
        sock.bind(&SocketAddr::new(src, 0).into())
            .map_err(|source| SocketError::Bind { addr: src, source })?;
    }
    sock.set_nonblocking(true).map_err(SocketError::Socket)?;
    let std: std::net::TcpStream = sock.into();
    let tsock = TcpSocket::from_std_stream(std);
    match tokio::time::timeout(opts.timeout, tsock.connect(opts.peer)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => Err(SocketError::Connect {
            addr: opts.peer,
            source,
        }),
        Err(_) => Err(SocketError::Timeout(opts.peer)),
    }
}

/// Sets `TCP_USER_TIMEOUT`: unacknowledged data older than `d` ends the connection.
pub fn set_user_timeout(stream: &TcpStream, d: Duration) -> io::Result<()> {
    SockRef::from(stream).set_tcp_user_timeout(Some(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5sig_has_the_kernels_layout() {
        assert_eq!(std::mem::size_of::<Md5Sig>(), 216);
        assert_eq!(std::mem::align_of::<Md5Sig>(), 8);
        let v = Md5Sig::new("198.51.100.1".parse().expect("ip"), b"secret").expect("fits");
        assert_eq!(v.keylen, 6);
        assert_eq!(&v.addr.0[4..8], &[198, 51, 100, 1]);
        assert!(Md5Sig::new("2001:db8::1".parse().expect("ip"), &[0; 81]).is_err());
    }

    #[test]
    fn the_kernel_accepts_the_md5_option() {
        // Exercises the real setsockopt: a wrong layout would give EINVAL. Kernels without
        // TCP MD5 answer ENOPROTOOPT, which is what the speaker reports too.
        let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        let v = Md5Sig::new("198.51.100.1".parse().expect("ip"), b"secret").expect("fits");
        match setsockopt(&sock, TcpMd5Sig, &v) {
            Ok(()) | Err(nix::Error::ENOPROTOOPT) => {}
            Err(e) => panic!("setsockopt(TCP_MD5SIG): {e}"),
        }
        let sock6 = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        let v6 = Md5Sig::new("2001:db8::1".parse().expect("ip"), b"secret").expect("fits");
        match setsockopt(&sock6, TcpMd5Sig, &v6) {
            Ok(()) | Err(nix::Error::ENOPROTOOPT) => {}
            Err(e) => panic!("setsockopt(TCP_MD5SIG) v6: {e}"),
        }
    }
}
