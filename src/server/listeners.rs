//! Listening sockets: one per worker, sharing one address.
//!
//! Each worker has its own listener bound to the same address with `SO_REUSEPORT`, so the kernel spreads
//! incoming connections across workers and no worker ever touches another's sockets. Where the kernel does
//! not balance `SO_REUSEPORT` listeners (macOS and the BSDs other than FreeBSD's `SO_REUSEPORT_LB`), the
//! workers share one listening socket instead: each registers its own duplicate, the first to accept gets
//! the connection, and the others find the backlog empty.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::LoopConfig;
use crate::conn::tls;
use crate::relay::auth::ClientKeys;

/// `count` listening sockets sharing one address (see the module docs).
///
/// `SO_REUSEPORT` would also let a *second* tokenpipe started by mistake on the same port join the group
/// silently and take half the connections. So a fixed port is first probed with a plain bind, which fails
/// with "address in use" if anyone listens there.
pub fn bind_listeners(
    addr: SocketAddr,
    count: usize,
    backlog: Option<u32>,
) -> io::Result<Vec<TcpListener>> {
    let count = count.max(1);
    if addr.port() != 0 {
        drop(TcpListener::bind(addr)?);
    }
    let first = bind_one(addr, backlog)?;
    let addr = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..count {
        all.push(if BALANCED_REUSEPORT {
            bind_one(addr, backlog)?
        } else {
            all[0].try_clone()?
        });
    }
    Ok(all)
}

/// Whether the kernel spreads connections across `SO_REUSEPORT` listeners.
const BALANCED_REUSEPORT: bool = cfg!(any(target_os = "linux", target_os = "android"));

fn bind_one(addr: SocketAddr, backlog: Option<u32>) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Restarting must not wait for old connections in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if BALANCED_REUSEPORT {
        socket.set_reuse_port(true)?;
    }
    // Accepted sockets inherit it on Linux (see `Transport::accepted`): one call here, not one per client.
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // The kernel caps the backlog at its `somaxconn`; asking for the most an `int` holds gets exactly that.
    let backlog = backlog.map_or(i32::MAX, |b| i32::try_from(b).unwrap_or(i32::MAX));
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Says at start whether clients need a key (names only; a key is never logged).
pub(super) fn log_client_keys(keys: &ClientKeys, listen: SocketAddr) {
    if keys.is_empty() && !listen.ip().to_canonical().is_loopback() {
        log::warn!(
            "no client keys: anyone who reaches {listen} is served (--allow-unauthenticated)"
        );
    } else if keys.is_empty() {
        log::info!("no client keys: every client is served (the listener is on loopback only)");
    } else {
        log::info!("clients need a key: {} configured ({keys:?})", keys.len());
    }
}

/// The listener's TLS configuration, when `--tls-cert` and `--tls-key` are given.
pub(super) fn inbound_tls(
    common: &LoopConfig,
) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    match &common.tls {
        Some((cert, key)) => tls::server_config(cert, key).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_refused_even_with_reuseport() {
        let ours = bind_listeners("127.0.0.1:0".parse().unwrap(), 2, None).unwrap();
        let taken = ours[0].local_addr().unwrap();
        let err = bind_listeners(taken, 2, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    /// Accepted sockets inherit `TCP_NODELAY` from the listener, which is why `Transport::accepted` does
    /// not set it on Linux.
    #[cfg(target_os = "linux")]
    #[test]
    fn accepted_sockets_inherit_nodelay() {
        let ls = bind_listeners("127.0.0.1:0".parse().unwrap(), 1, None).unwrap();
        let _peer = std::net::TcpStream::connect(ls[0].local_addr().unwrap()).unwrap();
        ls[0].set_nonblocking(false).unwrap();
        let (accepted, _) = ls[0].accept().unwrap();
        assert!(accepted.nodelay().unwrap());
    }

    #[test]
    fn port_zero_gives_all_listeners_the_same_real_port() {
        let ls = bind_listeners("127.0.0.1:0".parse().unwrap(), 3, Some(16)).unwrap();
        let port = ls[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(ls.iter().all(|l| l.local_addr().unwrap().port() == port));
    }
}
