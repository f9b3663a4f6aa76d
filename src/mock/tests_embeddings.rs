//! Tests of `embeddings`.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::*;

#[test]
fn vectors_are_deterministic_small_and_exact() {
    let a = vector("hello world", DEFAULT_DIMENSIONS);
    assert_eq!(a.len(), 8);
    assert_eq!(a, vector("hello world", 8));
    assert_ne!(a, vector("hello world!", 8));
    // A longer vector starts with the shorter one.
    assert_eq!(vector("hello world", 16)[..8], a[..]);
    for x in &a {
        assert!((-1.0..1.0).contains(x), "{x}");
        // k / 128 - 1: exact in f32, and printed exactly.
        assert_eq!((x + 1.0) * 128.0, ((x + 1.0) * 128.0).round());
    }
}

#[test]
fn requests() {
    let r = parse_embeddings(br#"{"model":"m","input":"one two"}"#).unwrap();
    assert_eq!(
        r,
        EmbeddingsRequest {
            inputs: vec!["one two".into()],
            dimensions: 8,
            base64: false
        }
    );
    let r = parse_embeddings(br#"{"input":["a",[1,2]],"dimensions":3,"encoding_format":"base64"}"#)
        .unwrap();
    assert_eq!(
        r,
        EmbeddingsRequest {
            inputs: vec!["a".into(), "1 2".into()],
            dimensions: 3,
            base64: true
        }
    );
    let r = parse_embeddings(br#"{"input":[5,6,7]}"#).unwrap();
    assert_eq!(r.inputs, ["5 6 7"]);
    for (body, needle) in [
        ("{}", "`input`"),
        (r#"{"input":[]}"#, "empty"),
        (r#"{"input":[{}]}"#, "items"),
        (r#"{"input":[[1,-1]]}"#, "token ids"),
        (r#"{"input":"x","dimensions":0}"#, "dimensions"),
        (r#"{"input":"x","dimensions":100000}"#, "dimensions"),
        (
            r#"{"input":"x","encoding_format":"hex"}"#,
            "encoding_format",
        ),
    ] {
        let e = parse_embeddings(body.as_bytes()).unwrap_err();
        assert!(e.contains(needle), "{body}: {e}");
    }
}

#[test]
fn response_body_floats_and_base64() {
    let req = EmbeddingsRequest {
        inputs: vec!["hello world".into(), "x".into()],
        dimensions: 4,
        base64: false,
    };
    let v: Value = serde_json::from_slice(&embeddings(&req)).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "mock");
    assert_eq!(
        v["usage"],
        serde_json::json!({"prompt_tokens": 3, "total_tokens": 3})
    );
    let floats: Vec<f32> = v["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(floats, vector("hello world", 4));
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["data"][1]["object"], "embedding");

    let b64: Value = serde_json::from_slice(&embeddings(&EmbeddingsRequest {
        base64: true,
        ..req
    }))
    .unwrap();
    let bytes: Vec<u8> = vector("hello world", 4)
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    assert_eq!(b64["data"][0]["embedding"], base64(&bytes).as_str());
}

#[test]
fn base64_matches_rfc_4648() {
    for (input, output) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(input.as_bytes()), output);
    }
    assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
}
