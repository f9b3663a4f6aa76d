//! Server-Sent Events payloads: splitting them apart and making fake ones.

use super::*;

/// Splits an SSE payload into events (each event's lines joined by `\n`, line endings normalized).
pub fn sse_events(payload: &[u8]) -> Vec<String> {
    let text = lossy(payload).replace("\r\n", "\n").replace('\r', "\n");
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| e.to_string())
        .collect()
}

/// The `data:` value of every event that has one (multi-line data joined by `\n`).
pub fn sse_data(payload: &[u8]) -> Vec<String> {
    sse_events(payload)
        .iter()
        .filter_map(|e| {
            let data: Vec<&str> = e
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// The generated text of every token event, for either provider's event shape: OpenAI
/// `choices[0].delta.content`, Gemini `candidates[0].content.parts[].text`. Closing events without text
/// (`finish_reason`, `[DONE]`) are not tokens.
pub fn token_texts(payload: &[u8]) -> Vec<String> {
    sse_data(payload)
        .iter()
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
                return (!c.is_empty()).then(|| c.to_string());
            }
            let parts = v["candidates"][0]["content"]["parts"].as_array()?;
            let text: String = parts.iter().filter_map(|p| p["text"].as_str()).collect();
            (!text.is_empty()).then_some(text)
        })
        .collect()
}

/// A deterministic OpenAI-shaped SSE payload of `events` token events plus `data: [DONE]`; event sizes vary.
pub fn fake_sse_payload(events: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..events {
        let text = "tok".repeat(1 + (i * 7) % 13);
        let ev = serde_json::json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "choices": [{ "index": 0, "delta": { "content": format!("{text}{i} ") } }],
        });
        out.extend_from_slice(format!("data: {ev}\n\n").as_bytes());
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}
