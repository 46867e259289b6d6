//! One call of `junction provide`: run the command with the params as JSON
//! on stdin, turn its exit status and stdout into the answer.

use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

use junction::RpcError;
use junction::client::Body;
use serde_json::{Value, json};

/// The code of every answer that reports a failed command: Internal error.
pub const COMMAND_FAILED: i32 = -32603;
/// Bytes of stderr kept for the error message (the rest is read and dropped).
const STDERR_KEPT: u64 = 64 * 1024;

/// What to run and with what.
pub struct Invocation<'a> {
    /// The command and its arguments.
    pub command: &'a [String],
    /// The method called (JUNCTION_METHOD).
    pub method: &'a str,
    /// The daemon's id of the call, if it is one (JUNCTION_CALL_ID).
    pub id: Option<u64>,
    /// The params; None is written as `null` (in text mode: nothing).
    pub params: Option<&'a Body>,
    /// Text mode (`--text`): string params go in as plain text and stdout
    /// comes back as a JSON string.
    pub text: bool,
}

/// The output pipes of a started command, still to be drained.
pub struct Pipes {
    stdout: ChildStdout,
    stderr: JoinHandle<Vec<u8>>,
}

/// What the command printed, once its stdout has closed.
pub struct Output {
    stdout: Vec<u8>,
    too_large: bool,
    stderr: Vec<u8>,
}

/// The command line as a user would type it, for messages.
pub fn display(command: &[String]) -> String {
    command.join(" ")
}

/// The command line shortened for error answers (a shell script given
/// with `sh -c` can be long).
fn short(command: &[String]) -> String {
    const MAX: usize = 40;
    let full = display(command);
    if full.chars().count() <= MAX {
        return full;
    }
    let cut: String = full.chars().take(MAX - 3).collect();
    format!("{cut}...")
}

/// Starts the command in its own process group (so that a cancel can kill
/// whatever it started too) and feeds it the params. The caller kills (if
/// need be) and reaps the child.
pub fn start(invocation: &Invocation<'_>) -> Result<(Child, Pipes), RpcError> {
    let Some((program, args)) = invocation.command.split_first() else {
        return Err(RpcError::new(COMMAND_FAILED, "no command to run"));
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .env("JUNCTION_METHOD", invocation.method)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(id) = invocation.id {
        command.env("JUNCTION_CALL_ID", id.to_string());
    }
    let input = match invocation.params {
        None if invocation.text => Vec::new(),
        None => b"null".to_vec(),
        Some(Body::Json(value)) if invocation.text => text_input(value),
        Some(Body::Json(value)) => value.to_string().into_bytes(),
        Some(Body::Raw(bytes)) => {
            command.env("JUNCTION_RAW", "1");
            bytes.clone()
        }
    };
    let mut child = command.spawn().map_err(|e| {
        RpcError::new(
            COMMAND_FAILED,
            format!(
                "Internal error: cannot run `{}`: {e}",
                short(invocation.command)
            ),
        )
    })?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(RpcError::new(
            COMMAND_FAILED,
            "Internal error: no pipes to the command",
        ));
    };
    // A thread each, so that a command that writes before it reads (or
    // never reads) cannot deadlock against us. A command that exits
    // without reading its input is not an error (the write gets EPIPE).
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let stderr = std::thread::spawn(move || drain(stderr, STDERR_KEPT).0);
    Ok((child, Pipes { stdout, stderr }))
}

impl Pipes {
    /// Reads stdout until the command (and whatever it started) closes it,
    /// keeping up to `max_output` bytes, and what stderr had.
    pub fn collect(self, max_output: u64) -> Output {
        let (stdout, too_large) = drain(self.stdout, max_output);
        let stderr = self.stderr.join().unwrap_or_default();
        Output {
            stdout,
            too_large,
            stderr,
        }
    }
}

/// Reads `from` to its end, keeping the first `keep` bytes; true when
/// there was more.
fn drain(mut from: impl Read, keep: u64) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let _ = (&mut from).take(keep).read_to_end(&mut kept);
    let rest = io::copy(&mut from, &mut io::sink()).unwrap_or(0);
    (kept, rest > 0)
}

/// Text mode's stdin: a string param (`"hi"` or `["hi"]`) as its plain
/// text, anything else as JSON.
fn text_input(params: &Value) -> Vec<u8> {
    match params {
        Value::String(text) => text.clone().into_bytes(),
        Value::Array(items) => match items.as_slice() {
            [Value::String(text)] => text.clone().into_bytes(),
            _ => params.to_string().into_bytes(),
        },
        _ => params.to_string().into_bytes(),
    }
}

/// Text mode's result: stdout as a JSON string, less one trailing newline
/// (`\n` or `\r\n`): the newline `echo` and `date` end with, not the
/// text's own.
fn text_output(cmd: &str, stdout: &[u8]) -> Result<Body, RpcError> {
    let text = std::str::from_utf8(stdout).map_err(|e| {
        RpcError::new(
            COMMAND_FAILED,
            format!("Internal error: the output of `{cmd}` is not UTF-8 text ({e})"),
        )
    })?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    Ok(Body::Json(Value::String(text.to_string())))
}

/// The answer: stdout as JSON (empty: null), or in text mode as a string,
/// when the command succeeded, else an error saying how it failed.
pub fn answer(
    command: &[String],
    status: io::Result<ExitStatus>,
    output: &Output,
    text_mode: bool,
) -> Result<Body, RpcError> {
    let cmd = short(command);
    let status = status.map_err(|e| {
        RpcError::new(
            COMMAND_FAILED,
            format!("Internal error: waiting for `{cmd}`: {e}"),
        )
    })?;
    if !status.success() {
        let stderr = first_line(&output.stderr);
        let how = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!("was killed by signal {signal}"),
            (None, None) => "failed".to_string(),
        };
        let message = if stderr.is_empty() {
            format!("Internal error: `{cmd}` {how}")
        } else {
            format!("Internal error: `{cmd}` {how}: {stderr}")
        };
        let data = json!({"status": status.code(), "signal": status.signal(), "stderr": stderr});
        return Err(RpcError::new(COMMAND_FAILED, message).data(data));
    }
    if output.too_large {
        return Err(RpcError::new(
            COMMAND_FAILED,
            format!(
                "Internal error: `{cmd}` printed more than {} bytes (see --max-output)",
                output.stdout.len()
            ),
        ));
    }
    if text_mode {
        return text_output(&cmd, &output.stdout);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let text = text.trim();
    if text.is_empty() {
        return Ok(Body::Json(Value::Null));
    }
    serde_json::from_str(text).map(Body::Json).map_err(|e| {
        let shown: String = first_line(text.as_bytes()).chars().take(80).collect();
        RpcError::new(
            COMMAND_FAILED,
            format!(
                "Internal error: the output of `{cmd}` is not JSON ({e}): {shown} \
                 (hint: provide --text wraps plain output as a JSON string)"
            ),
        )
        .data(json!({"stdout": shown}))
    })
}

fn first_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("")
        .to_string()
}
