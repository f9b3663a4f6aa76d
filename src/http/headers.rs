//! Which header fields a proxy passes on.
//!
//! RFC 9110 §7.6.1: some fields concern one connection, not the message: `Connection` itself and every
//! field it names, and the classic hop-by-hop ones (`Keep-Alive`, `TE`, `Transfer-Encoding`, `Upgrade`,
//! `Proxy-*`). A proxy must not forward them, in either direction. The relay also re-frames every body it
//! forwards (chunked to an HTTP/1.1 client, whatever the upstream used), so `Content-Length` and `Trailer`
//! are its own to write, and `Host` names the upstream, not us.

/// Fields that describe one hop, whatever `Connection` says.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "te",
    "transfer-encoding",
    "upgrade",
    "trailer",
    "proxy-connection",
    "content-length",
];

/// True when a field called `name` is forwarded, given the `Connection` field values of its message.
pub fn is_end_to_end(name: &str, connection: &[&[u8]]) -> bool {
    let named_by_connection = connection
        .iter()
        .flat_map(|value| super::list_elements(value))
        .any(|token| token.eq_ignore_ascii_case(name.as_bytes()));
    let lower = name.to_ascii_lowercase();
    !(HOP_BY_HOP.contains(&lower.as_str())
        || lower.starts_with("proxy-")
        || lower == "host"
        || named_by_connection)
}

/// The end-to-end fields of `headers`, in order, also leaving out those `drop` names (case-insensitive).
pub fn end_to_end<'a>(
    headers: &'a [(String, Vec<u8>)],
    drop: &'a [&str],
) -> impl Iterator<Item = &'a (String, Vec<u8>)> {
    let connection: Vec<&[u8]> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .map(|(_, v)| v.as_slice())
        .collect();
    headers.iter().filter(move |(name, _)| {
        is_end_to_end(name, &connection) && !drop.iter().any(|d| d.eq_ignore_ascii_case(name))
    })
}

/// The first value of the field `name` (case-insensitive), as text.
pub fn value<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_are_dropped() {
        let headers = h(&[
            ("Host", "relay"),
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("Keep-Alive", "timeout=5"),
            ("X-Secret-Hop", "1"),
            ("TE", "trailers"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"),
            ("Proxy-Authorization", "Basic x"),
            ("Content-Length", "5"),
            ("Content-Type", "application/json"),
            ("anthropic-version", "2023-06-01"),
            ("Authorization", "Bearer client"),
        ]);
        let kept: Vec<&str> = end_to_end(&headers, &["authorization"])
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(kept, ["Content-Type", "anthropic-version"]);
        assert_eq!(value(&headers, "content-type"), Some("application/json"));
        assert_eq!(value(&headers, "x-missing"), None);
    }
}
