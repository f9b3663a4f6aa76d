//! `--listen`: where the relay (or the mock) takes connections.

use std::net::{SocketAddr, ToSocketAddrs};

/// Parses `--listen`: `HOST:PORT` (`127.0.0.1:8080`, `[::1]:8080`, `localhost:8080`) or a bare `PORT`
/// (on 127.0.0.1). A host name is resolved once, here; its first IPv4 address is preferred.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let expected =
        "expected HOST:PORT (e.g. 127.0.0.1:8080, localhost:8080, [::1]:8080) or a bare PORT";
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let port: u16 = s
            .parse()
            .map_err(|_| format!("port {s} is out of range (0-65535)"))?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?}: {expected}"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?}: port {port:?} is not a number from 0 to 65535"))?;
    if host.is_empty() {
        return Err(format!("{s:?}: {expected}"));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{s:?}: cannot resolve {host:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{s:?}: {host:?} has no address"))
}
