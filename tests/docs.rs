//! The book must not drift from the code it explains. Chapter 1 shows the real `Worker::turn`; this test
//! compares it, byte for byte, with the function in src/reactor/mod.rs. When the loop changes, copy the
//! function into the chapter again (between the two marker lines).

use std::fs;

fn read(path: &str) -> String {
    fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).expect(path)
}

/// The text of the function that starts at the line `signature` and ends at the first line that closes it at
/// the same indentation.
fn function(source: &str, signature: &str) -> String {
    let start = source
        .find(signature)
        .unwrap_or_else(|| panic!("{signature} not found"));
    let indent = &source[source[..start].rfind('\n').map_or(0, |i| i + 1)..start];
    let closing = format!("\n{indent}}}\n");
    let end = source[start..].find(&closing).expect("end of the function") + start + closing.len();
    source[start - indent.len()..end].to_string()
}

#[test]
fn chapter_one_shows_the_real_loop() {
    let code = function(
        &read("src/reactor/mod.rs"),
        "pub fn turn(&mut self, max_wait: Option<Duration>) -> io::Result<()> {",
    );
    let chapter = read("docs/01-the-loop.md");
    let begin = "<!-- BEGIN Worker::turn (checked by tests/docs.rs) -->";
    let end = "<!-- END Worker::turn -->";
    let from = chapter
        .find(begin)
        .expect("begin marker in docs/01-the-loop.md")
        + begin.len();
    let to = chapter
        .find(end)
        .expect("end marker in docs/01-the-loop.md");
    let block = chapter[from..to].trim();
    let shown = block
        .strip_prefix("```rust\n")
        .and_then(|b| b.strip_suffix("```"))
        .expect("one ```rust block between the markers");
    assert_eq!(
        shown, code,
        "docs/01-the-loop.md shows a Worker::turn that is not the one in src/reactor/mod.rs"
    );
}
