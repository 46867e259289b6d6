//! `junctiond --man`: the daemon's manual page, generated from its clap
//! definitions like `junction man` (issue 18, point 10).

mod common;

use std::process::Command;

#[test]
fn junctiond_man_prints_a_manual_page() {
    let output = Command::new(env!("CARGO_BIN_EXE_junctiond"))
        .arg("--man")
        .env_remove("JUNCTION_CONFIG")
        .output()
        .expect("run junctiond --man");
    assert!(output.status.success(), "{output:?}");
    let roff = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(
        roff.lines().any(|l| l.starts_with(".TH junctiond 1")),
        "{roff}"
    );
    // Options of every part of the configuration are on the page.
    for word in [
        "\\-\\-unix",
        "\\-\\-tcp",
        "\\-\\-auth\\-token\\-file",
        "\\-\\-max\\-frame",
        "\\-\\-print\\-config",
        "\\-\\-man",
    ] {
        assert!(roff.contains(word), "the page lacks {word}");
    }
    common::assert_man_renders(&roff, "junctiond");
}

#[test]
fn junctiond_man_starts_no_daemon() {
    // A socket path that cannot be bound: --man must not even try.
    let output = Command::new(env!("CARGO_BIN_EXE_junctiond"))
        .args(["--man", "--unix", "/nonexistent/dir/junction.sock"])
        .env_remove("JUNCTION_CONFIG")
        .output()
        .expect("run junctiond --man");
    assert!(output.status.success(), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
}
