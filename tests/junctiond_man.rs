//! `junctiond --man`: the daemon's manual page, generated from its clap
//! definitions like `junction man` (issue 18, point 10).

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
    // man renders it, where man is installed.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("junctiond.1");
    std::fs::write(&file, &roff).expect("write");
    match Command::new("man")
        .arg("-l")
        .arg(&file)
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .output()
    {
        Ok(out) => {
            assert!(out.status.success(), "{out:?}");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("junctiond"), "{text}");
        }
        Err(e) => eprintln!("skipped man -l: cannot run man ({e})"),
    }
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
