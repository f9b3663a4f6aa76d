//! Asking the mock upstream for faults (`src/mock/fault.rs`; docs/04-the-mock-upstream.md has the
//! grammar). A spec travels three ways: in the prompt ([`fault_prompt`], the only one that survives the
//! relay's simple route, which forwards nothing else), in a header field ([`post_with_fault`], forwarded
//! by pass-through routes) or in the query ([`fault_query`]). An upstream that refuses connections is an
//! address nobody listens on: [`super::closed_port_addr`].

use super::*;

/// `PROMPT [fault: SPEC]`: a prompt that asks the mock for `spec`. The mock cuts the marker out before it
/// answers, so the tokens are `prompt`'s words, cycled.
pub fn fault_prompt(prompt: &str, spec: &str) -> String {
    format!("{prompt} [fault: {spec}]")
}

/// `?mock_fault=SPEC`, URL-encoded, to put behind a path without a query.
pub fn fault_query(spec: &str) -> String {
    let spec: String = url::form_urlencoded::byte_serialize(spec.as_bytes()).collect();
    format!("?mock_fault={spec}")
}

/// `POST PATH` with a JSON `body` and the header field `x-mock-fault: SPEC`.
pub fn post_with_fault(path: &str, body: &str, spec: &str) -> Vec<u8> {
    post_with_headers(path, &[("x-mock-fault", spec)], body)
}

/// `POST PATH` with a JSON `body` and extra header fields.
pub fn post_with_headers(path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut raw = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    raw.into_bytes()
}
