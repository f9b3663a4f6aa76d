//! The options: defaults, bounds, the choice of upstream, and the values refused at start.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::*;

fn serve(args: &[&str]) -> ServeArgs {
    let cli =
        Cli::try_parse_from(std::iter::once("tokenpipe").chain(args.iter().copied())).unwrap();
    match cli.command {
        Some(Command::Serve(s)) => *s,
        None => cli.serve,
        Some(other) => panic!("not serve: {other:?}"),
    }
}

fn refused(args: &[&str]) -> String {
    Cli::try_parse_from(std::iter::once("tokenpipe").chain(args.iter().copied()))
        .expect_err("accepted")
        .to_string()
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn no_key_and_no_upstream_means_the_embedded_mock() {
    let config = serve(&[]).config(no_env).unwrap();
    let UpstreamConfig::EmbeddedMock {
        provider,
        model,
        tokens,
        ..
    } = &config.upstream
    else {
        panic!("not the embedded mock");
    };
    assert_eq!(
        (*provider, model.as_str(), *tokens),
        (Provider::OpenAi, "gpt-4o-mini", 20)
    );
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
}

#[test]
fn serve_is_the_default_subcommand() {
    let a = serve(&["--listen", "127.0.0.1:0", "--workers", "1"]);
    let b = serve(&["serve", "--listen", "127.0.0.1:0", "--workers", "1"]);
    assert_eq!(a.listen, b.listen);
    assert_eq!(a.workers, Some(1));
    assert!(Cli::try_parse_from(["tokenpipe", "--workers", "0"]).is_err());
}

/// A key in the environment with no `--upstream` means the provider's public API, over HTTPS.
#[test]
fn a_key_without_an_upstream_means_the_providers_https_api() {
    let env = |k: &str| (k == "GEMINI_API_KEY").then(|| "secret-key".to_string());
    let mut config = serve(&[]).config(env).unwrap();
    let u = config.first_upstream().expect("remote").clone();
    assert_eq!(u.provider, Provider::Gemini);
    assert_eq!(
        u.origin.to_string(),
        "https://generativelanguage.googleapis.com"
    );
    assert_eq!(u.key.unwrap().expose(), "secret-key");
    assert_eq!(u.model, "gemini-2.0-flash");
}

#[test]
fn explicit_upstream_with_key() {
    let env = |k: &str| (k == "OPENAI_API_KEY").then(|| "sk-test".to_string());
    let config = serve(&["--upstream", "http://127.0.0.1:9000/base"])
        .config(env)
        .unwrap();
    let mut config = config;
    let u = config.first_upstream().expect("remote").clone();
    assert_eq!(u.provider, Provider::OpenAi);
    assert_eq!(u.origin.port, 9000);
    assert_eq!(u.key.unwrap().expose(), "sk-test");
}

#[test]
fn an_invalid_model_is_refused() {
    let err = serve(&["--model", "../../v1/files"])
        .config(no_env)
        .unwrap_err();
    assert!(err.contains("--model"), "{err}");
}

#[test]
fn listen_takes_host_port_names_and_bare_ports() {
    assert_eq!(
        parse_listen("127.0.0.1:8085").unwrap().to_string(),
        "127.0.0.1:8085"
    );
    assert_eq!(parse_listen("8085").unwrap().to_string(), "127.0.0.1:8085");
    assert_eq!(
        parse_listen("[::1]:8085").unwrap().to_string(),
        "[::1]:8085"
    );
    let local = parse_listen("localhost:8085").unwrap();
    assert!(local.ip().is_loopback(), "{local}");
    assert_eq!(local.port(), 8085);
    for bad in [
        "",
        "localhost",
        "127.0.0.1",
        "99999",
        "host:port",
        ":80",
        "127.0.0.1:70000",
    ] {
        let err = parse_listen(bad).expect_err(bad);
        assert!(
            err.contains("HOST:PORT") || err.contains("port"),
            "{bad:?}: the error should say what form is expected: {err}"
        );
    }
    let err = refused(&["--listen", "localhost"]);
    assert!(err.contains("HOST:PORT"), "{err}");
}

/// Values that could never serve a request are refused when the options are parsed.
#[test]
fn values_that_can_never_serve_are_refused() {
    for args in [
        &["--max-body-bytes", "0"][..],
        &["--stream-buffer-bytes", "0"],
        &["--backlog", "0"],
        &["--workers", "0"],
        &["mock-upstream", "--max-body-bytes", "0"],
    ] {
        refused(args);
    }
    assert_eq!(serve(&["--max-body-bytes", "1"]).common.max_body_bytes, 1);
}

#[test]
fn durations_are_bounded() {
    for args in [
        &["--upstream-idle-timeout", "18446744073709551615"][..],
        &["--upstream-idle-timeout", "0"],
        &["--loop-warn-ms", "18446744073709551615"],
        &["mock-upstream", "--interval-ms", "999999999999"],
    ] {
        refused(args);
    }
}

#[test]
fn mock_upstream_options() {
    let cli = Cli::try_parse_from([
        "tokenpipe",
        "mock-upstream",
        "--listen",
        "0",
        "--tokens",
        "5",
        "--interval-ms",
        "0",
        "--format",
        "gemini",
    ])
    .unwrap();
    let Some(Command::MockUpstream(m)) = cli.command else {
        panic!("not mock-upstream");
    };
    let config = m.config();
    assert_eq!(config.listen.to_string(), "127.0.0.1:0");
    assert_eq!((config.tokens, config.format), (5, MockFormat::Gemini));
    assert!(config.interval.is_zero());
}

/// The drain's durations take units (or bare seconds), default to 30 s with no grace, and a grace that
/// would fill the whole drain is refused; `--max-clients` is optional and at least 1.
#[test]
fn drain_durations_and_the_client_cap() {
    let config = serve(&[]).config(no_env).unwrap();
    assert_eq!(config.common.drain, DrainPlan::default());
    assert_eq!(config.common.drain.timeout, Duration::from_secs(30));
    assert_eq!(config.max_clients, None);
    let config = serve(&["--drain-timeout", "2500ms", "--drain-grace", "1"])
        .config(no_env)
        .unwrap();
    assert_eq!(
        config.common.drain,
        DrainPlan {
            grace: Duration::from_secs(1),
            timeout: Duration::from_millis(2500)
        }
    );
    assert!(refused(&["--drain-timeout", "1.5s"]).contains("1500ms"));
    assert!(refused(&["--drain-timeout", "2d"]).contains("unknown unit"));
    let err = serve(&["--drain-timeout", "5s", "--drain-grace", "5s"])
        .config(no_env)
        .unwrap_err();
    assert!(err.contains("--drain-grace"), "{err}");
    let config = serve(&["--max-clients", "100"]).config(no_env).unwrap();
    assert_eq!(config.max_clients, Some(100));
    assert!(refused(&["--max-clients", "0"]).contains("0"));
}
