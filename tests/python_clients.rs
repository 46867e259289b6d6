//! The independent Python client (harness/clients/python), written from
//! proto/mcp1.md and proto/jsonrpc.md alone, run against the real junctiond:
//! the MCP1 test vectors, then both protocols over both transports.

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn python_clients_pass_against_the_daemon() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("harness/clients/python");
    let output = Command::new("python3")
        .args(["-m", "unittest", "-v", "test_clients"])
        .current_dir(&dir)
        .env("JUNCTIOND", env!("CARGO_BIN_EXE_junctiond"))
        .env("JUNCTION_BACKEND", common::backend_name())
        // Keep __pycache__ out of the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3 (is it installed and on PATH?)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python3 -m unittest -v test_clients in {} failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        dir.display(),
        output.status,
    );
    // unittest reports on stderr; make sure the suite actually ran.
    assert!(stderr.contains("\nOK"), "no OK from unittest:\n{stderr}");
}
