//! Where a daemon's socket and token files are, and when a client may trust
//! them. The daemon checks the socket's directory before it binds (by the
//! same rules, in junctiond); the client checks the directory and the
//! socket's owner before it connects. Both resolve the default path here, so
//! they agree on it and on which directory is the shared-`/tmp` fallback
//! that gets the strictest rule.
//!
//! The rules (docs/operations.md, "The socket and who can connect"):
//! - a symbolic link is never followed for the fallback directory, the
//!   socket or the lock file; for a directory the user named (`--unix`,
//!   `XDG_RUNTIME_DIR`), only a link owned by us or root is followed;
//! - the fallback `/tmp/junction-<uid>` is made with one `mkdir(0700)` and
//!   must then be a real directory owned by us with no group or other
//!   permissions;
//! - any other socket directory must be owned by us or root and not be
//!   writable by group or others unless it is sticky (like `/tmp`);
//! - the client connects only to a socket owned by us, root or the owner of
//!   its directory.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What makes a path on the way to the socket untrustworthy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathProblem {
    /// A symbolic link where none is followed.
    #[error("is a symbolic link, which is never followed here (someone may have planted it)")]
    Symlink,
    /// A symbolic link owned by another user.
    #[error(
        "is a symbolic link owned by uid {owner}, not by uid {euid} or root; it is not followed"
    )]
    ForeignSymlink {
        /// Who owns the link.
        owner: u32,
        /// Our effective uid.
        euid: u32,
    },
    /// Not a directory.
    #[error("is not a directory")]
    NotADirectory,
    /// Not a regular file (the lock file).
    #[error("is not a regular file")]
    NotAFile,
    /// Owned by a user we do not trust.
    #[error("is owned by uid {owner}; only {trusted} may own it")]
    Owner {
        /// Who owns it.
        owner: u32,
        /// Who may, in words ("uid 1000 or root").
        trusted: String,
    },
    /// Others could replace what is in it.
    #[error(
        "has mode {mode:04o}: group or others may write to it without the sticky bit, so they could replace the socket"
    )]
    Writable {
        /// The directory's mode bits.
        mode: u32,
    },
    /// The shared-`/tmp` fallback directory is not private.
    #[error(
        "has mode {mode:04o}; the fallback directory must have mode 0700 (no group or other permissions)"
    )]
    NotPrivate {
        /// The directory's mode bits.
        mode: u32,
    },
    /// The client's fallback directory is writable by others.
    #[error(
        "has mode {mode:04o}: group or others may write to it, so they could replace the socket"
    )]
    Shared {
        /// The directory's mode bits.
        mode: u32,
    },
}

/// Our effective uid: what the kernel checks, and who must own our files.
pub fn euid() -> u32 {
    // SAFETY: geteuid takes no argument, cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

fn nonempty(var: &str) -> Option<OsString> {
    std::env::var_os(var).filter(|v| !v.is_empty())
}

/// The default Unix socket path: `$XDG_RUNTIME_DIR/junction.sock`, else
/// `$JUNCTION_TMPDIR/junction-<euid>/junction.sock` (`JUNCTION_TMPDIR`
/// defaults to `/tmp`, as tmux's `TMUX_TMPDIR`).
pub fn default_unix_path() -> PathBuf {
    match nonempty("XDG_RUNTIME_DIR") {
        Some(dir) => PathBuf::from(dir).join("junction.sock"),
        None => fallback_dir_in(&tmp_base(), euid()).join("junction.sock"),
    }
}

/// Where the fallback directory is made when `XDG_RUNTIME_DIR` is unset.
fn tmp_base() -> PathBuf {
    nonempty("JUNCTION_TMPDIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
}

/// The fallback directory for `uid` under `base`: `<base>/junction-<uid>`.
pub fn fallback_dir_in(base: &Path, uid: u32) -> PathBuf {
    base.join(format!("junction-{uid}"))
}

/// The fallback directory in use, when `XDG_RUNTIME_DIR` is unset.
pub fn fallback_dir() -> Option<PathBuf> {
    match nonempty("XDG_RUNTIME_DIR") {
        Some(_) => None,
        None => Some(fallback_dir_in(&tmp_base(), euid())),
    }
}

/// The directory a socket path lives in ("." for a bare file name).
pub fn socket_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Who may own a path, in words for an error: "uid 1000 or root",
/// "uid 1000, root or uid 1001 (the directory's owner)".
pub fn trusted_words(euid: u32, also: Option<u32>) -> String {
    match also.filter(|&uid| uid != euid && uid != 0) {
        Some(uid) if euid != 0 => format!("uid {euid}, root or uid {uid} (the directory's owner)"),
        Some(uid) => format!("root or uid {uid} (the directory's owner)"),
        None if euid == 0 => "root".into(),
        None => format!("uid {euid} or root"),
    }
}

/// A verdict on a path: which path is at fault and why.
pub type Verdict = Result<(), (PathBuf, PathProblem)>;

/// The client's check before connecting to `socket`: the directory (the
/// fallback one: a real directory owned by us or root, writable by nobody
/// else; another one: not writable by others unless sticky) and the socket
/// (not a link; owned by us, root or the directory's owner). A path that
/// does not exist passes: connecting then reports it.
pub fn check_client_path(socket: &Path) -> Verdict {
    let dir = socket_dir(socket);
    let fallback = fallback_dir().is_some_and(|f| f == dir);
    check_client_path_as(socket, fallback, euid())
}

/// [`check_client_path`] with the fallback decision and the uid given.
pub fn check_client_path_as(socket: &Path, fallback: bool, euid: u32) -> Verdict {
    let dir = socket_dir(socket);
    let at_dir = |problem| Err((dir.to_path_buf(), problem));
    let dir_meta = if fallback {
        fs::symlink_metadata(dir)
    } else {
        fs::metadata(dir)
    };
    let dir_meta = match dir_meta {
        Ok(meta) => meta,
        Err(_) => return Ok(()),
    };
    let mode = dir_meta.mode() & 0o7777;
    if fallback {
        if dir_meta.file_type().is_symlink() {
            return at_dir(PathProblem::Symlink);
        }
        if !dir_meta.is_dir() {
            return at_dir(PathProblem::NotADirectory);
        }
        if dir_meta.uid() != euid && dir_meta.uid() != 0 {
            return at_dir(PathProblem::Owner {
                owner: dir_meta.uid(),
                trusted: trusted_words(euid, None),
            });
        }
        if mode & 0o022 != 0 {
            return at_dir(PathProblem::Shared { mode });
        }
    } else if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return at_dir(PathProblem::Writable { mode });
    }
    let meta = match fs::symlink_metadata(socket) {
        Ok(meta) => meta,
        Err(_) => return Ok(()),
    };
    if meta.file_type().is_symlink() {
        return Err((socket.to_path_buf(), PathProblem::Symlink));
    }
    if !meta.file_type().is_socket() {
        // Connecting fails with its own error.
        return Ok(());
    }
    let owner = meta.uid();
    let dir_owner = (!fallback).then_some(dir_meta.uid());
    if owner != euid && owner != 0 && Some(owner) != dir_owner {
        return Err((
            socket.to_path_buf(),
            PathProblem::Owner {
                owner,
                trusted: trusted_words(euid, dir_owner),
            },
        ));
    }
    Ok(())
}

/// The token file of a daemon: beside its Unix socket (`<socket>.token`),
/// or for a daemon without one, [`tcp_token_path`] of its TCP port.
pub fn token_path(unix: Option<&Path>, tcp_port: u16) -> PathBuf {
    match unix {
        Some(socket) => {
            let mut path = socket.as_os_str().to_owned();
            path.push(".token");
            path.into()
        }
        None => tcp_token_path(tcp_port),
    }
}

/// The token file of a daemon whose Unix socket is off:
/// `junction-tcp-<port>.token` in the default socket's directory.
pub fn tcp_token_path(tcp_port: u16) -> PathBuf {
    let socket = default_unix_path();
    let dir = socket.parent().unwrap_or(Path::new("/tmp"));
    dir.join(format!("junction-tcp-{tcp_port}.token"))
}

/// A token name: 1 to 64 of `A-Z a-z 0-9 - _ .` (docs/security.md).
pub fn valid_token_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Splits `NAME:SECRET` when the part before the first colon is a token name.
pub fn split_named(line: &str) -> Option<(&str, &str)> {
    line.split_once(':')
        .filter(|(name, _)| valid_token_name(name))
}

/// The secret a client sends from a token file's text: the file's only
/// line, without a `NAME:` prefix (a file of named tokens is the daemon's,
/// and its whole text is never sent).
pub fn client_secret(text: &str) -> &str {
    let text = text.trim();
    match split_named(text) {
        Some((_, secret)) if !text.contains('\n') => secret.trim(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_paths_follow_the_environment_rules() {
        assert_eq!(
            fallback_dir_in(Path::new("/tmp"), 1000),
            PathBuf::from("/tmp/junction-1000")
        );
        assert_eq!(socket_dir(Path::new("x.sock")), Path::new("."));
        assert_eq!(trusted_words(1000, None), "uid 1000 or root");
        assert_eq!(trusted_words(0, Some(0)), "root");
        assert_eq!(
            token_path(Some(Path::new("/a/j.sock")), 0),
            PathBuf::from("/a/j.sock.token")
        );
    }

    #[test]
    fn a_client_sends_only_a_secret() {
        assert_eq!(client_secret("ci:bbbb\n"), "bbbb");
        assert_eq!(client_secret("plain\n"), "plain");
        assert_eq!(client_secret("a:1\nb:2\n"), "a:1\nb:2");
        assert!(valid_token_name("ci-1.x_y"));
        assert!(!valid_token_name("") && !valid_token_name("a b"));
    }
}
