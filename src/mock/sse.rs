//! The two ways providers frame a Server-Sent Event, and JSON bodies, appended to a caller's buffer.
//!
//! * OpenAI Chat/Completions and Gemini send bare `data: {json}` events (separated by `\n\n`, Gemini by
//!   `\r\n\r\n`);
//! * OpenAI's Responses API and Anthropic name every event: `event: NAME\ndata: {json}\n\n`.
//!
//! Serializing these types cannot fail; should it ever, nothing is appended, so a buffer never holds half an
//! event.

use serde::Serialize;

/// Appends `data: {json}{separator}`.
pub fn write_data_event<T: Serialize>(event: &T, separator: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut *out, event).is_ok() {
        out.extend_from_slice(separator);
    } else {
        out.truncate(start);
    }
}

/// Appends `event: {name}\ndata: {json}\n\n`.
pub fn write_named_event<T: Serialize>(name: &str, event: &T, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    if serde_json::to_writer(&mut *out, event).is_ok() {
        out.extend_from_slice(b"\n\n");
    } else {
        out.truncate(start);
    }
}

/// A JSON body (`{}` in the impossible case that serialization fails).
pub fn json_body<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}
