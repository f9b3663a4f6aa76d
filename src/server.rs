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
use std::sync::mpsc::{self, Receiver, Sender};

use socket2::{Domain, Protocol, Socket, Type};

use crate::reactor::{Service, Settings, Worker};

/// Pending connections the kernel may queue per listener (it caps this at `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// Running workers.
pub struct Started {
    /// The bound address (with the real port when `:0` was asked).
    pub addr: SocketAddr,
    /// One message per worker that stopped: its name and why.
    exits: Receiver<(String, io::Result<()>)>,
}

impl Started {
    /// Waits until any worker stops, and reports why. A worker only stops on a fatal error (or a bug that
    /// panicked it); running on with fewer workers would hide that, so the caller should exit.
    pub fn wait(self) -> io::Result<()> {
        match self.exits.recv() {
            Ok((name, Ok(()))) => Err(io::Error::other(format!("worker {name} stopped"))),
            Ok((name, Err(e))) => Err(io::Error::other(format!("worker {name} failed: {e}"))),
            Err(_) => Err(io::Error::other("all workers are gone")),
        }
    }
}

/// Reports a worker's end on drop, which also happens when its thread unwinds from a panic.
struct ExitReport {
    name: String,
    result: Option<io::Result<()>>,
    to: Sender<(String, io::Result<()>)>,
}

impl Drop for ExitReport {
    fn drop(&mut self) {
        let result = self
            .result
            .take()
            .unwrap_or_else(|| Err(io::Error::other("panicked")));
        // The receiver may be gone if the process is already stopping; nothing to do then.
        let _ = self.to.send((std::mem::take(&mut self.name), result));
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
    let (to, exits) = mpsc::channel();
    for (i, listener) in listeners.into_iter().enumerate() {
        let name = format!("{name}-{i}");
        let worker = Worker::new(name.clone(), listener, settings.clone(), service(i))?;
        let report = ExitReport {
            name: name.clone(),
            result: None,
            to: to.clone(),
        };
        std::thread::Builder::new().name(name).spawn(move || {
            // Moved whole into the thread (a closure would otherwise capture only the field it assigns), so
            // it is dropped here: when the loop returns, or when the thread unwinds.
            let mut report = report;
            report.result = Some(worker.run());
        })?;
    }
    Ok(Started { addr, exits })
}

/// `count` listening sockets sharing one address through `SO_REUSEPORT`.
///
/// `SO_REUSEPORT` would also let a *second* tokenpipe started by mistake on the same port join the group
/// silently and take half the connections. So a fixed port is first probed with a plain bind, which fails
/// with "address in use" if anyone listens there.
pub fn bind_listeners(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    if addr.port() != 0 {
        drop(TcpListener::bind(addr)?);
    }
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
    fn a_taken_port_is_refused_even_with_reuseport() {
        let ours = bind_listeners("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let taken = ours[0].local_addr().unwrap();
        let err = bind_listeners(taken, 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn port_zero_gives_all_listeners_the_same_real_port() {
        let ls = bind_listeners("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let port = ls[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(ls.iter().all(|l| l.local_addr().unwrap().port() == port));
    }
}
