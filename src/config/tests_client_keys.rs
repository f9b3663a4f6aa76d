//! Client keys in the options: `--client-key`, `--client-keys-file`, the config file's `client_keys_file`
//! and `allow_unauthenticated`, and what is never shown of a key.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use std::path::PathBuf;

use super::*;

const K1: &str = "first-client-key-0001";
const K2: &str = "second-client-key-002";
const FILE_KEY: &str = "file-client-key-00003";

/// A directory of its own with a key file and a config file naming it; removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str, config: &str) -> Dir {
        let dir =
            std::env::temp_dir().join(format!("tokenpipe-keys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let keys = format!("# the team\nalice {FILE_KEY}\n");
        std::fs::write(dir.join("keys.txt"), keys).expect("write keys");
        std::fs::write(dir.join("tokenpipe.toml"), config).expect("write config");
        Dir(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().expect("UTF-8").to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const UPSTREAM: &str = r#"
[[upstream]]
name = "local"
provider = "openai"
url = "http://127.0.0.1:9001"
"#;

fn serve(args: &[&str]) -> ServeArgs {
    let cli = Cli::try_parse_sourced(std::iter::once("tokenpipe").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    cli.serve
}

fn names(config: &Config) -> Vec<Option<&str>> {
    config.client_keys.iter().map(ClientKey::name).collect()
}

#[test]
fn keys_come_from_the_options_and_the_key_file_together() {
    let dir = Dir::new("both", UPSTREAM);
    let keys_file = dir.path("keys.txt");
    let args = [
        "--client-key",
        K1,
        "--client-key",
        K2,
        "--client-keys-file",
        &keys_file,
    ];
    let config = serve(&args).config(|_| None).expect("config");
    assert_eq!(names(&config), [None, None, Some("alice")]);
    // None: the relay is open, which only loopback allows (the check at start).
    let config = serve(&[]).config(|_| None).expect("config");
    assert!(config.client_keys.is_empty() && !config.allow_unauthenticated);
    let config = serve(&["--allow-unauthenticated"])
        .config(|_| None)
        .expect("config");
    assert!(config.allow_unauthenticated);
}

/// A bad key is named by its position; neither clap nor our check repeats it.
#[test]
fn a_bad_key_is_refused_without_being_shown() {
    let e = serve(&["--client-key", K1, "--client-key", "short-secret"])
        .config(|_| None)
        .expect_err("a short key");
    assert!(e.contains("number 2") && !e.contains("short-secret"), "{e}");
    let dir = Dir::new("twice", UPSTREAM);
    let keys_file = dir.path("keys.txt");
    let e = serve(&["--client-key", FILE_KEY, "--client-keys-file", &keys_file])
        .config(|_| None)
        .expect_err("the same key twice");
    assert!(e.contains("twice") && !e.contains(FILE_KEY), "{e}");
    let e = serve(&["--client-keys-file", "/no/such/keys.txt"])
        .config(|_| None)
        .expect_err("a missing file");
    assert!(e.contains("/no/such/keys.txt"), "{e}");
}

#[test]
fn no_debug_output_shows_a_key() {
    let args = serve(&["--client-key", K1]);
    let config = args.config(|_| None).expect("config");
    let shown = format!("{args:?} {config:?}");
    assert!(!shown.contains(K1), "{shown}");
    assert!(shown.contains("***"), "{shown}");
}

/// The file names the key file (relative to itself); a key or a key file given as an option replaces it.
#[test]
fn the_config_file_names_a_key_file_and_options_win() {
    let text = format!("client_keys_file = \"keys.txt\"\nallow_unauthenticated = true\n{UPSTREAM}");
    let dir = Dir::new("file", &text);
    let config_path = dir.path("tokenpipe.toml");
    let config = serve(&["--config", &config_path])
        .config(|_| None)
        .expect("config");
    assert_eq!(names(&config), [Some("alice")]);
    assert!(config.allow_unauthenticated);
    for option in [
        &["--client-key", K1][..],
        &["--client-keys-file", "/other/keys.txt"],
    ] {
        let mut args = vec!["--config", config_path.as_str()];
        args.extend_from_slice(option);
        let given = serve(&args);
        let result = given.config(|_| None);
        match option[0] {
            "--client-key" => assert_eq!(names(&result.expect("config")), [None]),
            _ => assert!(result.expect_err("missing").contains("/other/keys.txt")),
        }
    }
}

#[test]
fn keys_never_go_in_the_config_file() {
    let text = format!("client_keys = [\"{K1}\"]\n{UPSTREAM}");
    let dir = Dir::new("inline", &text);
    let e = serve(&["--config", &dir.path("tokenpipe.toml")])
        .config(|_| None)
        .expect_err("keys in the file");
    assert!(e.contains("client_keys_file") && e.contains(":1: "), "{e}");
    assert!(!e.contains(K1), "{e}");
    // A key file that does not read as one is reported at the line that names it.
    let text = format!("\n\nclient_keys_file = \"tokenpipe.toml\"\n{UPSTREAM}");
    let dir = Dir::new("badkeys", &text);
    let e = serve(&["--config", &dir.path("tokenpipe.toml")])
        .config(|_| None)
        .expect_err("not a key file");
    assert!(e.contains(":3: ") && e.contains("client keys file"), "{e}");
}
