//! The event loop backend: which one runs is reported, `--backend io-uring`
//! refuses to start where io_uring is forbidden, and `auto` falls back to
//! epoll with one warning. "Forbidden" is made real with a seccomp filter
//! that fails io_uring_setup with EPERM, as container runtimes do.

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which backend the suite runs on (see tests/common).
fn expected_backend() -> &'static str {
    common::backend_name()
}

#[test]
fn rpc_stats_names_the_backend_under_test() {
    let server = common::start();
    for endpoint in server.endpoints() {
        let stats = server
            .client(&endpoint)
            .call("rpc.stats", None)
            .expect("stats");
        assert_eq!(stats["backend"], expected_backend(), "{stats}");
    }
}

/// Makes io_uring_setup fail with EPERM in the child, before it runs junctiond.
fn forbid_io_uring(cmd: &mut Command) {
    const IO_URING_SETUP: u32 = 425; // the same number on x86_64 and aarch64
    const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
    const BPF_RET_K: u16 = 0x06;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    let filter = [
        // The syscall number is the first word of struct seccomp_data.
        libc::sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: BPF_JMP_JEQ_K,
            jt: 0,
            jf: 1,
            k: IO_URING_SETUP,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ALLOW,
        },
    ];
    // SAFETY: runs in the forked child before exec; it only calls prctl,
    // which is async-signal-safe, with a filter that lives on this stack
    // frame for the duration of the call (the kernel copies it).
    unsafe {
        cmd.pre_exec(move || {
            let program = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, 2, &program as *const libc::sock_fprog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn junctiond(dir: &tempfile::TempDir, backend: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_junctiond"));
    cmd.arg("--unix")
        .arg(dir.path().join("j.sock"))
        .args(["--tcp", "off", "--backend", backend])
        .env_remove("JUNCTION_BACKEND")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Reads the child's log until `needle` shows up (or the child ends).
fn log_until(child: &mut Child, needle: &str) -> String {
    let mut log = String::new();
    let mut stderr = child.stderr.take().expect("stderr");
    let deadline = Instant::now() + common::PATIENCE;
    let mut buf = [0u8; 4096];
    while !log.contains(needle) && Instant::now() < deadline {
        match stderr.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => log.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    child.stderr = Some(stderr);
    log
}

fn stop(mut child: Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}

#[test]
fn junctiond_says_which_backend_runs() {
    for backend in ["epoll", "io-uring"] {
        if let (Some(why), "io-uring") = (junction::io_uring_unavailable(), backend) {
            eprintln!("skipped io-uring: io_uring unavailable here ({why})");
            continue;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = junctiond(&dir, backend).spawn().expect("spawn");
        let log = log_until(&mut child, "listening on");
        assert!(log.contains(&format!("# event loop: {backend}")), "{log}");
        stop(child);
    }
}

#[test]
fn an_explicit_io_uring_backend_refuses_to_start_where_it_is_forbidden() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = junctiond(&dir, "io-uring");
    forbid_io_uring(&mut cmd);
    let out = cmd.output().expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("io_uring is unavailable"), "{stderr}");
    assert!(stderr.contains("EPERM"), "{stderr}");
    assert!(stderr.contains("--backend epoll"), "{stderr}");
    assert!(!dir.path().join("j.sock").exists(), "no socket left behind");
}

#[test]
fn auto_falls_back_to_epoll_with_one_warning_where_io_uring_is_forbidden() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = junctiond(&dir, "auto");
    forbid_io_uring(&mut cmd);
    let mut child = cmd.spawn().expect("spawn");
    let log = log_until(&mut child, "listening on");
    assert_eq!(log.matches("io_uring is unavailable").count(), 1, "{log}");
    assert!(log.contains("# event loop: epoll"), "{log}");
    // And it serves.
    let endpoint = junction::client::Endpoint::Unix(dir.path().join("j.sock"));
    let mut client = junction::Client::connect(&endpoint).expect("connect");
    client
        .set_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    assert_eq!(client.call("rpc.ping", None).expect("ping"), "pong");
    stop(child);
}
