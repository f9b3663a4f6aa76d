//! Starting workers: one thread, one event loop and one listening socket each.
//!
//! Each worker has its own listener bound to the same address with `SO_REUSEPORT`, so the kernel spreads
//! incoming connections across workers and no worker ever touches another's sockets: there is no shared
//! accept queue, no lock and no hand-off. Binding `port 0` would give every socket a different port, so the
//! first socket binds and the others bind to the port it got.
//!
//! All listeners are bound before any worker starts, so once [`Started::addr`] is known (and printed),
//! connections succeed: the kernel queues them until the workers accept.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;

use socket2::{Domain, Protocol, Socket, Type};

use crate::reactor::{Service, Settings, Worker};

/// Pending connections the kernel may queue per listener (it caps this at `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// Running workers.
pub struct Started {
    /// The bound address (with the real port when `:0` was asked).
    pub addr: SocketAddr,
    pub workers: Vec<JoinHandle<io::Result<()>>>,
}

impl Started {
    /// Waits for every worker; the first error wins. Workers only return on a fatal `poll` error.
    pub fn join(self) -> io::Result<()> {
        let mut result = Ok(());
        for w in self.workers {
            let r = w
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("worker thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

/// Binds `count` listeners on `addr` and starts a worker on each, serving what `service(i)` builds.
pub fn start(
    name: &str,
    addr: SocketAddr,
    count: usize,
    settings: Settings,
    mut service: impl FnMut(usize) -> Service,
) -> io::Result<Started> {
    let listeners = bind_listeners(addr, count.max(1))?;
    let addr = listeners[0].local_addr()?;
    let settings = Arc::new(settings);
    let mut workers = Vec::with_capacity(listeners.len());
    for (i, listener) in listeners.into_iter().enumerate() {
        let worker = Worker::new(
            format!("{name}-{i}"),
            listener,
            settings.clone(),
            service(i),
        )?;
        let handle = std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || worker.run())?;
        workers.push(handle);
    }
    Ok(Started { addr, workers })
}

/// `count` listening sockets sharing one address through `SO_REUSEPORT`.
pub fn bind_listeners(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    let first = bind_one(addr)?;
    let addr = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..count {
        all.push(bind_one(addr)?);
    }
    Ok(all)
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Restarting must not wait for old connections in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_gives_all_listeners_the_same_real_port() {
        let ls = bind_listeners("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let port = ls[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(ls.iter().all(|l| l.local_addr().unwrap().port() == port));
    }
}
