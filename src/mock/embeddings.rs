//! OpenAI's embeddings (`POST /v1/embeddings`): deterministic small vectors, sans-IO.
//!
//! Each input gets a vector of `dimensions` (default [`DEFAULT_DIMENSIONS`]) floats derived from its bytes
//! alone: a 64-bit FNV-1a hash of the text seeds a SplitMix64 sequence, and each value is one byte of it
//! mapped to `k / 128 - 1`, a float in `[-1, 1)` that JSON prints exactly. The same text always gets the same
//! vector, different texts (almost always) different ones. `encoding_format: "base64"` gets the
//! little-endian `f32` bytes in base64, as the API sends them.

use serde::Serialize;
use serde_json::Value;

use super::sse::json_body;

/// Length of a vector when the request names no `dimensions`.
pub const DEFAULT_DIMENSIONS: usize = 8;

/// The most `dimensions` a request may ask for (the largest OpenAI embedding model's size).
pub const MAX_DIMENSIONS: usize = 3072;

/// Most inputs in one request, as the API allows.
pub const MAX_INPUTS: usize = 2048;

/// What an embeddings request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingsRequest {
    /// The texts; token-array inputs become their numbers separated by spaces.
    pub inputs: Vec<String>,
    pub dimensions: usize,
    pub base64: bool,
}

/// Parses a request body: `input` is a string, an array of strings, an array of token ids or an array of
/// such arrays; `dimensions` a positive integer; `encoding_format` `"float"` or `"base64"`.
pub fn parse_embeddings(body: &[u8]) -> Result<EmbeddingsRequest, String> {
    let obj = super::script::json_object(body)?;
    let inputs = match obj.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err("`input` must not be empty".into());
        }
        Some(Value::Array(items)) if items.iter().all(Value::is_u64) => vec![token_text(items)?],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                Value::Array(tokens) => token_text(tokens),
                _ => Err("`input` items must be strings or arrays of token ids".to_string()),
            })
            .collect::<Result<_, _>>()?,
        None => return Err("`input` is required".into()),
        Some(_) => return Err("`input` must be a string or an array".into()),
    };
    if inputs.len() > MAX_INPUTS {
        return Err(format!("`input` may hold at most {MAX_INPUTS} items"));
    }
    let dimensions = match obj.get("dimensions") {
        None | Some(Value::Null) => DEFAULT_DIMENSIONS,
        Some(v) => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
            Some(n @ 1..=MAX_DIMENSIONS) => n,
            _ => {
                return Err(format!(
                    "`dimensions` must be an integer from 1 to {MAX_DIMENSIONS}"
                ));
            }
        },
    };
    let base64 = match obj.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(_) => return Err("`encoding_format` must be \"float\" or \"base64\"".into()),
    };
    Ok(EmbeddingsRequest {
        inputs,
        dimensions,
        base64,
    })
}

fn token_text(tokens: &[Value]) -> Result<String, String> {
    let ids: Option<Vec<String>> = tokens
        .iter()
        .map(|t| t.as_u64().map(|n| n.to_string()))
        .collect();
    ids.map(|ids| ids.join(" "))
        .ok_or_else(|| "token ids must be non-negative integers".to_string())
}

/// The vector of `text`.
pub fn vector(text: &str, dimensions: usize) -> Vec<f32> {
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (0..dimensions)
        .map(|_| {
            // SplitMix64.
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            f32::from(u8::try_from(z >> 56).unwrap_or(0)) / 128.0 - 1.0
        })
        .collect()
}

/// The response body: `{"object":"list","data":[{"object":"embedding","index":i,"embedding":..}],..}`,
/// usage counting the inputs' words.
pub fn embeddings(req: &EmbeddingsRequest) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body {
        object: &'static str,
        data: Vec<Item>,
        model: &'static str,
        usage: Usage,
    }
    #[derive(Serialize)]
    struct Item {
        object: &'static str,
        index: usize,
        embedding: Embedding,
    }
    #[derive(Serialize)]
    #[serde(untagged)]
    enum Embedding {
        Floats(Vec<f32>),
        Base64(String),
    }
    #[derive(Serialize)]
    struct Usage {
        prompt_tokens: usize,
        total_tokens: usize,
    }
    let data = req
        .inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let v = vector(text, req.dimensions);
            let embedding = if req.base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Embedding::Base64(base64(&bytes))
            } else {
                Embedding::Floats(v)
            };
            Item {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    let words = req
        .inputs
        .iter()
        .map(|t| t.split_whitespace().count())
        .sum();
    json_body(&Body {
        object: "list",
        data,
        model: "mock",
        usage: Usage {
            prompt_tokens: words,
            total_tokens: words,
        },
    })
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= group.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * k)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "tests_embeddings.rs"]
mod tests;
