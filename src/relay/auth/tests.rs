//! Client keys: the key file, the lookup, where a request may carry its key, and the check at start.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::*;

const ALICE: &str = "alice-key-0123456789";
const BOB: &str = "bob-key-abcdefghijkl";
const NAMELESS: &str = "nameless-key-000000000";

fn keys() -> ClientKeys {
    ClientKeys::new(&[
        ClientKey::new(Some("alice"), ALICE).unwrap(),
        ClientKey::new(Some("bob"), BOB).unwrap(),
        ClientKey::new(None, NAMELESS).unwrap(),
    ])
    .unwrap()
}

fn request(method: &str, path: &str, query: Option<&str>, headers: &[(&str, &str)]) -> Request {
    Request {
        method: method.into(),
        path: path.into(),
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

const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));

fn who(req: &Request, provider: Option<Provider>) -> Result<Identity, Refusal> {
    authenticate(&keys(), req, provider, PEER)
}

fn key(name: &str) -> Result<Identity, Refusal> {
    Ok(Identity::Key(name.into()))
}

#[test]
fn the_key_file_takes_keys_and_named_keys_and_skips_comments() {
    let text = format!(
        "# client keys\r\n\nalice {ALICE}\r\n   \n\t{NAMELESS}  \n# bob {BOB}\nbob\t{BOB}\n"
    );
    let keys = parse_key_file(&text).unwrap();
    let names: Vec<Option<&str>> = keys.iter().map(ClientKey::name).collect();
    assert_eq!(names, [Some("alice"), None, Some("bob")]);
    assert_eq!(keys[0], ClientKey::new(Some("alice"), ALICE).unwrap());
    assert_eq!(keys[1], ClientKey::new(None, NAMELESS).unwrap());
}

/// Every bad line is reported by its number, and no report repeats what the line held.
#[test]
fn key_file_errors_name_the_line_and_never_the_key() {
    let text = format!(
        "ok {ALICE}\nshort-key\nname {BOB} extra\nbad/name {BOB}\nkey\u{7f}with-a-control-char\n"
    );
    let problems = parse_key_file(&text).unwrap_err();
    assert_eq!(problems.len(), 4, "{problems:?}");
    for (problem, line) in problems.iter().zip(2..) {
        assert!(problem.starts_with(&format!("line {line}: ")), "{problem}");
    }
    let all = problems.join("\n");
    for secret in ["short-key", BOB, "with-a-control-char"] {
        assert!(!all.contains(secret), "{all}");
    }
    assert!(all.contains("at least 16"), "{all}");
    assert!(all.contains("\"bad/name\""), "names are not secrets: {all}");
    // A file with no key would leave the relay open: refused.
    assert!(parse_key_file("# nothing yet\n\n").is_err());
}

#[test]
fn keys_and_names_are_checked_and_never_printed() {
    for bad in [
        "",
        "too-short",
        "with a space-123456",
        "new\nline-1234567890",
    ] {
        let e = ClientKey::new(None, bad).unwrap_err();
        assert!(bad.is_empty() || !e.contains(bad), "{e}");
    }
    assert_eq!(
        ClientKey::new(None, ""),
        Err("the client key is empty".into())
    );
    assert!(ClientKey::new(Some(""), ALICE).is_err());
    assert!(ClientKey::new(Some("ci-bot.1@team_a"), ALICE).is_ok());
    let shown = format!("{:?} {:?}", ClientKey::new(Some("alice"), ALICE), keys());
    assert!(
        !shown.contains(ALICE) && !shown.contains(NAMELESS),
        "{shown}"
    );
    assert!(shown.contains("alice") && shown.contains("#3"), "{shown}");
}

#[test]
fn a_key_is_found_by_its_whole_value_only() {
    let keys = keys();
    assert_eq!(keys.find(ALICE.as_bytes()).map(|n| &**n), Some("alice"));
    assert_eq!(keys.find(BOB.as_bytes()).map(|n| &**n), Some("bob"));
    assert_eq!(keys.find(NAMELESS.as_bytes()).map(|n| &**n), Some("#3"));
    for wrong in [
        &ALICE[..ALICE.len() - 1],
        &format!("{ALICE}x"),
        &ALICE.to_uppercase(),
        "",
    ] {
        assert_eq!(keys.find(wrong.as_bytes()), None, "{wrong}");
    }
    assert_eq!(ClientKeys::default().find(b""), None);
}

#[test]
fn a_key_or_a_name_given_twice_is_refused() {
    let twice = [
        ClientKey::new(Some("a"), ALICE).unwrap(),
        ClientKey::new(Some("b"), ALICE).unwrap(),
    ];
    let e = ClientKeys::new(&twice).unwrap_err();
    assert!(!e.contains(ALICE), "{e}");
    let same_name = [
        ClientKey::new(Some("a"), ALICE).unwrap(),
        ClientKey::new(Some("a"), BOB).unwrap(),
    ];
    assert!(ClientKeys::new(&same_name).is_err());
}

#[test]
fn without_keys_everyone_is_known_by_address() {
    let req = request("POST", "/api/v1/generate-stream", None, &[]);
    let open = ClientKeys::default();
    assert_eq!(
        authenticate(&open, &req, None, PEER),
        Ok(Identity::Ip(PEER))
    );
}

#[test]
fn health_probes_need_no_key() {
    for (method, path) in [
        ("GET", "/healthz"),
        ("HEAD", "/healthz"),
        ("GET", "/readyz"),
    ] {
        let req = request(method, path, None, &[]);
        assert_eq!(who(&req, None), Ok(Identity::Ip(PEER)), "{method} {path}");
    }
    for (method, path) in [
        ("POST", "/healthz"),
        ("GET", "/healthz/x"),
        ("GET", "/nope"),
    ] {
        let req = request(method, path, None, &[]);
        assert_eq!(who(&req, None), Err(Refusal::Missing), "{method} {path}");
    }
}

#[test]
fn a_bearer_token_works_on_every_route() {
    let bearer = format!("Bearer {ALICE}");
    for provider in [
        None,
        Some(Provider::OpenAi),
        Some(Provider::Anthropic),
        Some(Provider::Gemini),
    ] {
        let req = request("POST", "/x", None, &[("Authorization", &bearer)]);
        assert_eq!(who(&req, provider), key("alice"), "{provider:?}");
    }
    // The scheme is case-insensitive; surrounding blanks are not part of the token.
    let req = request(
        "POST",
        "/x",
        None,
        &[("authorization", &format!("bEaReR   {BOB} "))],
    );
    assert_eq!(who(&req, None), key("bob"));
    let wrong = request(
        "POST",
        "/x",
        None,
        &[("Authorization", "Bearer wrong-key-0123456789")],
    );
    assert_eq!(who(&wrong, None), Err(Refusal::Invalid));
    // Another scheme is not a tokenpipe key: as if nothing were sent.
    let basic = request(
        "POST",
        "/x",
        None,
        &[("Authorization", &format!("Basic {ALICE}"))],
    );
    assert_eq!(who(&basic, None), Err(Refusal::Missing));
    let bare = request("POST", "/x", None, &[("Authorization", ALICE)]);
    assert_eq!(who(&bare, None), Err(Refusal::Missing));
}

/// A provider's own header counts on that provider's paths, where its SDK sends it, and nowhere else.
#[test]
fn a_providers_own_header_works_on_its_paths() {
    let anthropic = request("POST", "/v1/messages", None, &[("x-api-key", ALICE)]);
    assert_eq!(who(&anthropic, Some(Provider::Anthropic)), key("alice"));
    assert_eq!(
        who(&anthropic, Some(Provider::Gemini)),
        Err(Refusal::Missing)
    );
    assert_eq!(who(&anthropic, None), Err(Refusal::Missing));
    let gemini = request(
        "POST",
        "/v1beta/models/m:x",
        None,
        &[("X-Goog-Api-Key", BOB)],
    );
    assert_eq!(who(&gemini, Some(Provider::Gemini)), key("bob"));
    assert_eq!(who(&gemini, Some(Provider::OpenAi)), Err(Refusal::Missing));
    assert_eq!(
        who(&gemini, Some(Provider::Anthropic)),
        Err(Refusal::Missing)
    );
}

#[test]
fn gemini_takes_its_key_in_the_query_too() {
    let query = format!("alt=sse&key={ALICE}");
    let req = request("POST", "/v1beta/models/m:x", Some(&query), &[]);
    assert_eq!(who(&req, Some(Provider::Gemini)), key("alice"));
    assert_eq!(who(&req, Some(Provider::OpenAi)), Err(Refusal::Missing));
    // Decoded as a URL query is: a client escapes what a URL cannot hold.
    let escaped = "key=nameless%2Dkey%2D000000000";
    let req = request("GET", "/v1beta/models", Some(escaped), &[]);
    assert_eq!(who(&req, Some(Provider::Gemini)), key("#3"));
    let req = request(
        "GET",
        "/v1beta/models",
        Some("key=wrong-key-0123456789"),
        &[],
    );
    assert_eq!(who(&req, Some(Provider::Gemini)), Err(Refusal::Invalid));
}

/// Every credential a request carries must be the same valid key: one identity, never a choice.
#[test]
fn several_credentials_must_be_one_valid_key() {
    let bearer = format!("Bearer {ALICE}");
    let same = request(
        "POST",
        "/v1/messages",
        None,
        &[("Authorization", &bearer), ("x-api-key", ALICE)],
    );
    assert_eq!(who(&same, Some(Provider::Anthropic)), key("alice"));
    let two = request(
        "POST",
        "/v1/messages",
        None,
        &[("Authorization", &bearer), ("x-api-key", BOB)],
    );
    assert_eq!(who(&two, Some(Provider::Anthropic)), Err(Refusal::Invalid));
    let one_bad = request(
        "POST",
        "/v1/messages",
        None,
        &[("x-api-key", "nope"), ("Authorization", &bearer)],
    );
    assert_eq!(
        who(&one_bad, Some(Provider::Anthropic)),
        Err(Refusal::Invalid)
    );
}

#[test]
fn refusals_say_where_the_key_goes_and_never_echo_one() {
    assert_eq!(Refusal::Invalid.message(None), "invalid client key");
    assert!(
        Refusal::Missing
            .message(None)
            .contains("Authorization: Bearer")
    );
    assert!(
        Refusal::Missing
            .message(Some(Provider::Anthropic))
            .contains("x-api-key")
    );
    assert!(
        Refusal::Missing
            .message(Some(Provider::Gemini))
            .contains("x-goog-api-key")
    );
}

#[test]
fn identities_display_names_and_addresses() {
    assert_eq!(Identity::Key("alice".into()).to_string(), "key alice");
    assert_eq!(Identity::Ip(PEER).to_string(), "address 10.0.0.7");
}

/// Beyond loopback, keys or an explicit choice; on loopback anything goes.
#[test]
fn only_loopback_may_serve_without_keys() {
    let at = |s: &str| s.parse::<SocketAddr>().unwrap();
    for loopback in [
        "127.0.0.1:8080",
        "127.1.2.3:0",
        "[::1]:8080",
        "[::ffff:127.0.0.1]:80",
    ] {
        assert_eq!(
            check_exposure(at(loopback), false, false),
            Ok(()),
            "{loopback}"
        );
    }
    for open in [
        "0.0.0.0:8080",
        "[::]:8080",
        "192.168.1.10:8080",
        "[2001:db8::1]:80",
    ] {
        let e = check_exposure(at(open), false, false).unwrap_err();
        assert!(
            e.contains(open) && e.contains("--allow-unauthenticated"),
            "{e}"
        );
        assert_eq!(
            check_exposure(at(open), true, false),
            Ok(()),
            "{open} with keys"
        );
        assert_eq!(
            check_exposure(at(open), false, true),
            Ok(()),
            "{open} allowed"
        );
    }
}
