//! docs/cli.md is `imgforge --help` and the help of every command, as the
//! binary prints it; this test fails when the two drift apart, so it is
//! also the snapshot test of every command's help.
//! `IMGFORGE_BLESS=1 cargo test --test cli_docs` rewrites the page.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;
use std::process::Command;

const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cli.md");

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_imgforge"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "imgforge {args:?} --help: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The command names a help text lists under "Commands:", without `help`.
fn commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

/// Appends the help of `path` and, depth first, of its commands.
fn document(path: &[&str], out: &mut String) {
    let text = help(path);
    let heading = if path.is_empty() {
        "imgforge".to_owned()
    } else {
        format!("imgforge {}", path.join(" "))
    };
    let level = "#".repeat(path.len() + 2);
    out.push_str(&format!(
        "{level} `{heading}`\n\n```text\n{}\n```\n\n",
        text.trim_end()
    ));
    for command in commands(&text) {
        let mut sub = path.to_vec();
        sub.push(&command);
        document(&sub, out);
    }
}

fn page() -> String {
    let mut out = String::from(
        "# Command line\n\n\
         Generated from the binary's own help (`IMGFORGE_BLESS=1 cargo test --test cli_docs`\n\
         rewrites it; the test fails when this page and `--help` differ).\n\n",
    );
    document(&[], &mut out);
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

#[test]
fn the_command_line_page_is_the_binarys_help() {
    let want = page();
    assert!(
        want.contains("## `imgforge`") && want.contains("### `imgforge build`"),
        "{want}"
    );
    assert!(
        want.contains("#### `imgforge cache "),
        "nested commands are documented: {want}"
    );
    if std::env::var_os("IMGFORGE_BLESS").is_some() {
        let tmp = Path::new(PAGE).with_extension("md.tmp");
        std::fs::write(&tmp, &want).unwrap();
        std::fs::rename(&tmp, PAGE).unwrap();
    }
    let have = std::fs::read_to_string(PAGE).unwrap_or_default();
    assert!(have == want, "docs/cli.md differs from `imgforge --help`; run IMGFORGE_BLESS=1 cargo test --test cli_docs and review the diff");
}

/// Every command's help is on the page (and so checked against the binary),
/// nested ones included; `relay` is hidden: QEMU runs it, people do not.
#[test]
fn every_command_has_its_help_on_the_page() {
    let page = page();
    let documented: Vec<&str> = page
        .lines()
        .filter(|l| l.starts_with('#') && l.contains(" `imgforge"))
        .filter_map(|l| l.split('`').nth(1))
        .collect();
    assert_eq!(
        documented,
        [
            "imgforge",
            "imgforge build",
            "imgforge packages",
            "imgforge fetch",
            "imgforge cache",
            "imgforge cache ls",
            "imgforge cache gc",
            "imgforge validate",
            "imgforge match",
            "imgforge plan",
            "imgforge render",
            "imgforge schema",
            "imgforge boot-test",
            "imgforge serve",
        ]
    );
    for global in ["-v, --verbose", "-q, --quiet"] {
        assert_eq!(
            page.matches(global).count(),
            documented.len(),
            "{global} is in every command's help"
        );
    }
}

#[test]
fn commands_are_read_from_the_help_text() {
    let text = "Usage: x <COMMAND>\n\nCommands:\n  build  Build it\n  cache  Look at the cache\n  help   Print this\n\nOptions:\n  -h, --help  Print help\n";
    assert_eq!(commands(text), ["build", "cache"]);
    assert!(commands("Usage: x [OPTIONS]\n\nOptions:\n  -h, --help\n").is_empty());
}
