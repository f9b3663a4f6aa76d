//! Tests of `fault`: the grammar (every key, bad values, unknown keys), where a request carries a spec,
//! the bounded key counts, and that no input makes the parser panic.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::*;
use proptest::prelude::*;

fn ms(n: u64) -> Option<Duration> {
    Some(Duration::from_millis(n))
}

#[test]
fn every_key() {
    let f = |spec: &str| parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
    assert_eq!(f("status=503").status, Some(503));
    let s = f("status=429,retry-after=0");
    assert_eq!((s.status, s.retry_after), (Some(429), Some(0)));
    assert_eq!(f("head-delay=250ms").head_delay, ms(250));
    assert_eq!(f("first-token-delay=2s").first_token_delay, ms(2000));
    assert_eq!(f("close-idle=0ms").close_idle, ms(0));
    assert_eq!(
        f("stall-after=3").cut,
        Some(Cut::AfterTokens(3, Break::Stall))
    );
    assert_eq!(
        f("reset-after=0").cut,
        Some(Cut::AfterTokens(0, Break::Reset))
    );
    assert_eq!(f("reset-after=request").cut, Some(Cut::ResetBeforeHead));
    assert_eq!(
        f("bad-chunk-after=2").cut,
        Some(Cut::AfterTokens(2, Break::BadChunk))
    );
    assert_eq!(
        f("error-after=1").cut,
        Some(Cut::AfterTokens(1, Break::Error))
    );
    assert_eq!(
        f("status=500,times=1,key=a.b_c-9").first,
        Some(First {
            times: 1,
            key: "a.b_c-9".into()
        })
    );
    // Combined, with blanks around items, keys and values.
    let all = f(" stall-after = 3 , first-token-delay=2s,head-delay=1s, close-idle=5s ");
    assert_eq!(
        all,
        Fault {
            head_delay: ms(1000),
            first_token_delay: ms(2000),
            cut: Some(Cut::AfterTokens(3, Break::Stall)),
            close_idle: ms(5000),
            ..Fault::default()
        }
    );
    assert_eq!(
        all.to_string(),
        "head-delay=1s,first-token-delay=2s,stall-after=3,close-idle=5s"
    );
    assert!(!all.is_none() && Fault::default().is_none());
}

#[test]
fn bad_specs_say_what_is_wrong() {
    for (spec, says) in [
        ("", "empty"),
        ("  ", "empty"),
        ("stall-after", "not KEY=VALUE"),
        ("stall-after=3,", "not KEY=VALUE"),
        ("stall=3", "unknown key \"stall\""),
        ("Status=500", "unknown key"),
        ("status=200", "from 400 to 599"),
        ("status=5000", "from 400 to 599"),
        ("status=+50", "from 400 to 599"),
        ("status=500,status=503", "status is given twice"),
        ("head-delay=5", "unit"),
        ("head-delay=ms", "unit"),
        ("head-delay=-5ms", "unit"),
        ("head-delay=1.5s", "unit"),
        ("head-delay=5m", "unit"),
        ("head-delay=3601s", "at most 3600s"),
        ("head-delay=99999999999s", "unit"),
        ("stall-after=x", "whole number of tokens"),
        ("stall-after=+1", "whole number"),
        ("stall-after=-1", "whole number"),
        ("reset-after=everything", "or `request`"),
        ("stall-after=4294967296", "too large"),
        ("stall-after=1,reset-after=2", "only one of"),
        ("error-after=1,error-after=1", "only one of"),
        ("times=1", "times and key go together"),
        ("status=500,key=k", "times and key go together"),
        ("status=500,times=0,key=k", "never happens"),
        ("status=500,times=1,key=", "letters, digits"),
        ("status=500,times=1,key=a b", "letters, digits"),
        ("status=500,times=1,key=a]", "letters, digits"),
        ("retry-after=3", "retry-after needs status"),
        ("times=2,key=k", "asks for no fault"),
    ] {
        let err = parse(spec).expect_err(spec);
        assert!(err.contains(says), "{spec:?}: {err:?} should say {says:?}");
    }
    let long = format!("status=500{}", ",".repeat(MAX_SPEC));
    assert!(parse(&long).unwrap_err().contains("at most 512 bytes"));
    let key = "k".repeat(MAX_KEY + 1);
    assert!(parse(&format!("status=500,times=1,key={key}")).is_err());
}

fn request(headers: &[(&str, &str)], query: Option<&str>) -> Request {
    Request {
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        query: query.map(str::to_string),
        version: 1,
        keep_alive: true,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
        body: Vec::new(),
    }
}

#[test]
fn the_head_carries_a_spec_in_a_field_or_the_query() {
    let found = |r: &Request| from_head(r).map(|f| f.map(|f| f.to_string()));
    let header = request(&[("X-Mock-Fault", "stall-after=2")], None);
    assert_eq!(found(&header), Ok(Some("stall-after=2".into())));
    // URL-encoded or not.
    let query = request(
        &[],
        Some("alt=sse&mock_fault=status%3D503%2Cretry-after%3D1"),
    );
    assert_eq!(found(&query), Ok(Some("status=503,retry-after=1".into())));
    let plain = request(&[], Some("mock_fault=reset-after=request&x=1"));
    assert_eq!(found(&plain), Ok(Some("reset-after=request".into())));
    // The header wins over the query; the older spellings still work, when well-formed.
    let both = request(
        &[("x-mock-fault", "status=502")],
        Some("mock_fault=status=503"),
    );
    assert_eq!(found(&both), Ok(Some("status=502".into())));
    let old = request(&[("x-mock-status", " 429 ")], Some("mock_status=503"));
    assert_eq!(found(&old), Ok(Some("status=429".into())));
    let old = request(&[("x-mock-status", "200")], Some("mock_status=503"));
    assert_eq!(found(&old), Ok(Some("status=503".into())));
    assert_eq!(found(&request(&[], Some("mock_status=99"))), Ok(None));
    assert_eq!(found(&request(&[], None)), Ok(None));
    // A malformed spec names where it was.
    let bad = from_head(&request(&[("x-mock-fault", "stall=1")], None)).unwrap_err();
    assert!(bad.starts_with("x-mock-fault: unknown key"), "{bad}");
    let bad = from_head(&request(&[], Some("mock_fault=status%3D1"))).unwrap_err();
    assert!(bad.starts_with("mock_fault: status=\"1\""), "{bad}");
    let mut binary = request(&[], None);
    binary.headers = vec![("x-mock-fault".into(), vec![0xff, 0xfe])];
    assert_eq!(from_head(&binary), Err("x-mock-fault: not UTF-8".into()));
}

#[test]
fn a_prompt_carries_a_spec_in_a_marker_cut_out_of_it() {
    let mut prompt = "hello brave[fault: stall-after=2 ]new world".to_string();
    let f = from_prompt(&mut prompt).unwrap().unwrap();
    assert_eq!(f.cut, Some(Cut::AfterTokens(2, Break::Stall)));
    assert_eq!(prompt, "hello brave new world");
    let mut prompt = "[fault:status=500,times=1,key=t1]".to_string();
    assert_eq!(from_prompt(&mut prompt).unwrap().unwrap().status, Some(500));
    assert_eq!(prompt.trim(), "");
    // The older spelling: the whole prompt, blanks around it ignored.
    for (text, status) in [
        ("status:429", Some(429)),
        ("  status:503\n", Some(503)),
        ("status:200", None),
        ("status:4290", None),
        ("status: 429", None),
        ("tell me status:429", None),
        ("hello world", None),
    ] {
        let mut prompt = text.to_string();
        let found = from_prompt(&mut prompt).unwrap();
        assert_eq!(found.and_then(|f| f.status), status, "{text:?}");
        assert_eq!(prompt, text, "an old spelling stays in the prompt");
    }
    for bad in ["a [fault: stall-after=2", "[fault: ]", "[fault: nope=1] b"] {
        let mut prompt = bad.to_string();
        let err = from_prompt(&mut prompt).unwrap_err();
        assert!(err.contains("[fault:"), "{bad}: {err}");
    }
}

#[test]
fn times_counts_requests_per_key() {
    let keys = KeyCounts::default();
    let twice = parse("status=500,times=2,key=a").unwrap();
    let other = parse("status=500,times=1,key=b").unwrap();
    let always = parse("status=500").unwrap();
    let seen: Vec<bool> = [&twice, &other, &twice, &other, &twice, &always, &always]
        .into_iter()
        .map(|f| keys.applies(f))
        .collect();
    assert_eq!(seen, [true, true, true, false, false, true, true]);
}

#[test]
fn key_counts_forget_the_oldest_key_first() {
    let keys = KeyCounts::default();
    let once = |key: &str| parse(&format!("status=500,times=1,key={key}")).unwrap();
    assert!(keys.applies(&once("first")));
    assert!(!keys.applies(&once("first")));
    for i in 0..KEYS_KEPT - 1 {
        assert!(keys.applies(&once(&format!("k{i}"))));
    }
    // Full: "first" is still remembered, and one more key pushes it out.
    assert!(!keys.applies(&once("first")));
    assert!(keys.applies(&once("one-more")));
    let counts = keys.counts.lock().unwrap();
    assert_eq!(
        (counts.by_key.len(), counts.oldest_first.len()),
        (KEYS_KEPT, KEYS_KEPT)
    );
    drop(counts);
    assert!(
        keys.applies(&once("first")),
        "a forgotten key counts from one again"
    );
}

/// Any fault, as the grammar can say it.
fn any_fault() -> impl Strategy<Value = Fault> {
    let delay = proptest::option::of((0u64..=3_600_000).prop_map(Duration::from_millis));
    let how = prop_oneof![
        Just(Break::Stall),
        Just(Break::Reset),
        Just(Break::BadChunk),
        Just(Break::Error)
    ];
    let cut = proptest::option::of(prop_oneof![
        Just(Cut::ResetBeforeHead),
        (any::<u32>(), how).prop_map(|(k, how)| Cut::AfterTokens(k, how)),
    ]);
    let status = proptest::option::of((400u16..=599, proptest::option::of(any::<u32>())));
    let first = proptest::option::of((1u32.., "[a-zA-Z0-9._-]{1,64}"));
    (status, delay.clone(), delay.clone(), cut, delay, first)
        .prop_map(|(status, head, first_token, cut, idle, first)| Fault {
            status: status.map(|(s, _)| s),
            retry_after: status.and_then(|(_, r)| r),
            head_delay: head,
            first_token_delay: first_token,
            cut,
            close_idle: idle,
            first: first.map(|(times, key)| First { times, key }),
        })
        .prop_filter("a spec asks for a fault", |f| {
            f.status.is_some()
                || f.head_delay.is_some()
                || f.first_token_delay.is_some()
                || f.cut.is_some()
                || f.close_idle.is_some()
        })
}

proptest! {
    #[test]
    fn garbage_never_panics(spec in ".{0,80}", raw in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = parse(&spec);
        let mut prompt = format!("x [fault:{spec}] y {spec}");
        let _ = from_prompt(&mut prompt);
        let text = String::from_utf8_lossy(&raw).into_owned();
        let _ = parse(&text);
        let query = format!("mock_fault={text}");
        let _ = from_head(&request(&[("x-mock-fault", &text)], Some(&query)));
    }

    /// Near-misses of the grammar: keys and values shuffled from the real ones.
    #[test]
    fn near_misses_never_panic(items in proptest::collection::vec(
        ("(status|head-delay|reset-after|times|key|stall-after|x)", "(=|==|)", "[0-9a-z ]{0,6}(ms|s|)"),
        0..6,
    )) {
        let spec: Vec<String> = items.iter().map(|(k, e, v)| format!("{k}{e}{v}")).collect();
        let _ = parse(&spec.join(","));
    }

    /// What `Display` writes, `parse` reads back as the same fault.
    #[test]
    fn display_parses_back(fault in any_fault()) {
        prop_assert_eq!(parse(&fault.to_string()), Ok(fault));
    }
}
