//! Client keys: what a key and its name may be, the key file, and the constant-time lookup.
//!
//! # The key file (`--client-keys-file`)
//!
//! One key per line, optionally after a name; blank lines and lines starting with `#` are ignored:
//!
//! ```text
//! # tokenpipe client keys: KEY, or NAME KEY
//! alice    4f6c2a9e0b1d7c3e8a5f9d2b6e1c0a7f
//! ci-bot   9b3e7d1f5a0c8e2d4b6a1f3c5e7d9b0a
//! 0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f
//! ```
//!
//! A key is visible ASCII without spaces, so a line splits at its whitespace without ambiguity: one field is
//! a key, two are a name and a key. The name is how the key is known in logs and to later stages (see
//! `Identity`); a key without one is known by its position, `#1`, `#2`, ... (keys given with
//! `--client-key` first, then the file's, in order). The file holds secrets: keep it readable by the
//! relay's user alone. Errors name the line, never its content.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use ring::digest::{SHA256, digest};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// The shortest key accepted: shorter ones are guessable (`openssl rand -hex 32` makes a good one).
pub const MIN_KEY_LEN: usize = 16;

/// A key a client may present, and its name if it has one. It never prints itself: `Debug` shows the name
/// and `***`, so a stray `{:?}` of a configuration cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientKey {
    name: Option<String>,
    secret: String,
}

impl ClientKey {
    /// A key of at least [`MIN_KEY_LEN`] visible ASCII characters (no spaces, no controls: it travels in a
    /// header), with an optional name of 1 to 64 of `A-Z a-z 0-9 _ - . @`. Errors never include the key.
    pub fn new(name: Option<&str>, secret: &str) -> Result<ClientKey, String> {
        if let Some(name) = name {
            let ok = (1..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.@".contains(&b));
            if !ok {
                return Err(format!(
                    "key name {name:?}: use 1 to 64 of A-Z a-z 0-9 _ - . @"
                ));
            }
        }
        if secret.is_empty() {
            // E.g. `TOKENPIPE_CLIENT_KEYS=` or `a,,b`: refused rather than read as "no keys" (fail closed).
            return Err("the client key is empty".into());
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "a client key may hold only visible ASCII (no spaces or control characters)".into(),
            );
        }
        if secret.len() < MIN_KEY_LEN {
            return Err(format!(
                "a client key must be at least {MIN_KEY_LEN} characters long (e.g. `openssl rand -hex 32`)"
            ));
        }
        Ok(ClientKey {
            name: name.map(str::to_string),
            secret: secret.to_string(),
        })
    }

    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKey")
            .field("name", &self.name)
            .field("secret", &"***")
            .finish()
    }
}

/// The keys of a key file's text, or every problem, each as `line N: what` (never the line itself).
pub fn parse_key_file(text: &str) -> Result<Vec<ClientKey>, Vec<String>> {
    let (mut keys, mut problems) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let key = match fields[..] {
            [secret] => ClientKey::new(None, secret),
            [name, secret] => ClientKey::new(Some(name), secret),
            _ => Err("expected KEY or NAME KEY (a key has no spaces)".into()),
        };
        match key {
            Ok(key) => keys.push(key),
            Err(e) => problems.push(format!("line {}: {e}", i + 1)),
        }
    }
    if keys.is_empty() && problems.is_empty() {
        problems.push("no key in the file: a relay told to check keys must have one".into());
    }
    match problems.is_empty() {
        true => Ok(keys),
        false => Err(problems),
    }
}

/// The keys in the file at `path`; an error names the file and every bad line.
pub fn read_key_file(path: &Path) -> Result<Vec<ClientKey>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("client keys file {}: {e}", path.display()))?;
    parse_key_file(&text).map_err(|problems| {
        let lines: Vec<String> = problems
            .iter()
            .map(|p| format!("client keys file {}: {p}", path.display()))
            .collect();
        lines.join("\n")
    })
}

/// The configured keys as the relay checks them: the SHA-256 digest of each, and the name it is known by.
///
/// Only digests are kept. Comparing digests, all 32 bytes long, means a comparison's time cannot depend on
/// the length of the key presented or of a configured one; and the keys themselves stay out of the
/// workers' memory.
#[derive(Clone, Default)]
pub struct ClientKeys {
    keys: Vec<([u8; 32], Arc<str>)>,
}

impl ClientKeys {
    /// Refuses the same key twice (it would have two names) and the same name twice.
    pub fn new(keys: &[ClientKey]) -> Result<ClientKeys, String> {
        let mut set = ClientKeys::default();
        for (i, key) in keys.iter().enumerate() {
            let name: Arc<str> = match key.name() {
                Some(name) => name.into(),
                None => format!("#{}", i + 1).into(),
            };
            if set.keys.iter().any(|(_, n)| *n == name) {
                return Err(format!("two client keys are named {name:?}"));
            }
            // At start, on the operator's own keys: no need for constant time here.
            let digest = sha256(key.secret.as_bytes());
            if set.keys.iter().any(|(d, _)| *d == digest) {
                return Err(format!(
                    "client key {name} is given twice (a key has one name)"
                ));
            }
            set.keys.push((digest, name));
        }
        Ok(set)
    }

    /// No key is configured: the relay is open.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The name of the key `presented` is, if it is one.
    ///
    /// In constant time, as far as it matters: the presented key is hashed once, and its digest compared
    /// with *every* configured digest by `subtle` (no early exit at the first differing byte, nor at the
    /// first match), so neither how much of a key was right nor which key matched shows in the time
    /// taken. Not constant: hashing takes time in proportion to the presented key's length (the client's
    /// own input), and the time grows with the number of keys configured (not a secret).
    pub fn find(&self, presented: &[u8]) -> Option<&Arc<str>> {
        let digest = sha256(presented);
        // 0: no match; i + 1: key i. Keys are distinct, so at most one matches.
        let mut found = 0u64;
        for (i, (key, _)) in self.keys.iter().enumerate() {
            let i = u64::try_from(i + 1).unwrap_or(u64::MAX);
            found = u64::conditional_select(&found, &i, key.ct_eq(&digest));
        }
        let index = usize::try_from(found).ok()?.checked_sub(1)?;
        self.keys.get(index).map(|(_, name)| name)
    }
}

/// Names only: the digests are not secrets in the way keys are, but have no business in a log either.
impl fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.keys.iter().map(|(_, name)| &**name).collect();
        f.debug_struct("ClientKeys").field("names", &names).finish()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}
