//! Trusting a Unix socket path, the daemon's side: the socket's directory
//! is checked (made when it is the fallback) before the daemon binds, and a
//! lock beside the socket keeps a second daemon off it. The default path,
//! the problems a path can have and the client's check are shared with every
//! client in `junction_client::path`.
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

use std::fs::{self, File, Metadata};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

pub use junction_client::path::{
    PathProblem, default_unix_path, euid, fallback_dir, socket_dir, trusted_words,
};

/// The daemon's rule for the socket's directory, on its `fstat`.
pub(crate) fn check_daemon_dir(
    meta: &Metadata,
    fallback: bool,
    euid: u32,
) -> Result<(), PathProblem> {
    if !meta.is_dir() {
        return Err(PathProblem::NotADirectory);
    }
    let mode = meta.mode() & 0o7777;
    if fallback {
        if meta.uid() != euid {
            return Err(PathProblem::Owner {
                owner: meta.uid(),
                trusted: format!("uid {euid}"),
            });
        }
        if mode & 0o077 != 0 {
            return Err(PathProblem::NotPrivate { mode });
        }
        return Ok(());
    }
    if meta.uid() != euid && meta.uid() != 0 {
        return Err(PathProblem::Owner {
            owner: meta.uid(),
            trusted: trusted_words(euid, None),
        });
    }
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(PathProblem::Writable { mode });
    }
    Ok(())
}

/// Makes `dir` and any missing parents, one `mkdir(0700)` each; a directory
/// that appears meanwhile is fine (what it is gets checked afterwards).
fn make_dirs(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(parent) => make_dirs(parent)?,
                None => return Err(e),
            }
            match fs::DirBuilder::new().mode(0o700).create(dir) {
                Err(e) if e.kind() != ErrorKind::AlreadyExists => Err(e),
                _ => Ok(()),
            }
        }
        Err(e) => Err(e),
    }
}

/// Why the daemon cannot use a socket directory.
#[derive(Debug)]
pub(crate) enum DirError {
    /// The directory is unsafe.
    Unsafe(PathBuf, PathProblem),
    /// A system call failed.
    Io(&'static str, io::Error),
}

/// Makes (when missing) and opens the socket's directory, then checks what
/// was opened (`fstat`, so a name swapped after the `lstat` changes
/// nothing). The fallback directory is made with a single `mkdir(0700)` and
/// never followed if it is a link; a directory the user named may be a link
/// only if we or root own the link.
pub(crate) fn check_daemon_dir_at(dir: &Path, fallback: bool) -> Result<(), DirError> {
    let euid = euid();
    let unsafe_dir = |problem| DirError::Unsafe(dir.to_path_buf(), problem);
    if fallback {
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(DirError::Io("cannot create directory", e)),
        }
    } else if matches!(fs::symlink_metadata(dir), Err(e) if e.kind() == ErrorKind::NotFound) {
        make_dirs(dir).map_err(|e| DirError::Io("cannot create directory", e))?;
    }
    let link = fs::symlink_metadata(dir).map_err(|e| DirError::Io("cannot inspect", e))?;
    let follow = if link.file_type().is_symlink() {
        if fallback {
            return Err(unsafe_dir(PathProblem::Symlink));
        }
        if link.uid() != euid && link.uid() != 0 {
            return Err(unsafe_dir(PathProblem::ForeignSymlink {
                owner: link.uid(),
                euid,
            }));
        }
        true
    } else {
        false
    };
    let mut flags = libc::O_DIRECTORY;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(dir)
    {
        Ok(file) => file,
        // Swapped for a link or a file between the lstat and the open.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
            return Err(match fs::symlink_metadata(dir) {
                Ok(m) if m.file_type().is_symlink() => unsafe_dir(PathProblem::Symlink),
                _ => unsafe_dir(PathProblem::NotADirectory),
            });
        }
        Err(e) => return Err(DirError::Io("cannot open directory", e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| DirError::Io("cannot inspect", e))?;
    check_daemon_dir(&meta, fallback, euid).map_err(unsafe_dir)
}

/// The lock file of a socket path: `<socket>.lock`.
pub(crate) fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Why the lock could not be taken.
#[derive(Debug)]
pub(crate) enum LockError {
    /// Another process holds it; its pid when it wrote one.
    Held(Option<u32>),
    /// The lock file is unsafe.
    Unsafe(PathProblem),
    /// A system call failed.
    Io(&'static str, io::Error),
}

/// Opens (creating, mode 0600, never through a link) and locks the lock file
/// `path` with `flock(LOCK_EX | LOCK_NB)`, then writes our pid into it. The
/// lock lasts as long as the returned value; the file itself stays on exit
/// (removing it would let a third daemon lock a new file while a second
/// still holds the old one).
pub(crate) fn take_lock(path: &Path) -> Result<Flock<File>, LockError> {
    let file = match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(LockError::Unsafe(PathProblem::Symlink));
        }
        Err(e) => return Err(LockError::Io("cannot open the lock file", e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| LockError::Io("cannot inspect the lock file", e))?;
    if !meta.is_file() {
        return Err(LockError::Unsafe(PathProblem::NotAFile));
    }
    let euid = euid();
    if meta.uid() != euid {
        return Err(LockError::Unsafe(PathProblem::Owner {
            owner: meta.uid(),
            trusted: format!("uid {euid}"),
        }));
    }
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => {
            let pid = format!("{}\n", std::process::id());
            lock.set_len(0)
                .and_then(|()| lock.write_all_at(pid.as_bytes(), 0))
                .map_err(|e| LockError::Io("cannot write the lock file", e))?;
            Ok(lock)
        }
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => Err(LockError::Held(holder_pid(&file))),
        Err((_, errno)) => Err(LockError::Io("cannot lock", errno.into())),
    }
}

/// The pid the lock's holder wrote. It writes it just after locking, so an
/// empty file is read again a few times (bounded: about half a second).
fn holder_pid(file: &File) -> Option<u32> {
    let mut buf = [0u8; 32];
    for _ in 0..100 {
        if let Ok(n) = file.read_at(&mut buf, 0) {
            let text = std::str::from_utf8(&buf[..n]).unwrap_or("");
            if let Ok(pid) = text.trim().parse() {
                return Some(pid);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn the_fallback_directory_must_be_ours_and_private() {
        let base = tempfile::tempdir().expect("tempdir");
        let uid = euid();
        let dir = base.path().join("d");
        fs::create_dir(&dir).expect("mkdir");
        chmod(&dir, 0o700);
        let meta = fs::metadata(&dir).expect("stat");
        assert_eq!(check_daemon_dir(&meta, true, uid), Ok(()));
        assert!(matches!(
            check_daemon_dir(&meta, true, uid + 1),
            Err(PathProblem::Owner { .. })
        ));
        chmod(&dir, 0o750);
        let meta = fs::metadata(&dir).expect("stat");
        assert_eq!(
            check_daemon_dir(&meta, true, uid),
            Err(PathProblem::NotPrivate { mode: 0o750 })
        );
        // Elsewhere, group read is fine; group write only with the sticky bit.
        assert_eq!(check_daemon_dir(&meta, false, uid), Ok(()));
        chmod(&dir, 0o770);
        let meta = fs::metadata(&dir).expect("stat");
        assert_eq!(
            check_daemon_dir(&meta, false, uid),
            Err(PathProblem::Writable { mode: 0o770 })
        );
        chmod(&dir, 0o1777);
        let meta = fs::metadata(&dir).expect("stat");
        assert_eq!(check_daemon_dir(&meta, false, uid), Ok(()));
    }

    #[test]
    fn a_linked_fallback_directory_is_refused_not_followed() {
        let base = tempfile::tempdir().expect("tempdir");
        let target = base.path().join("target");
        fs::create_dir(&target).expect("mkdir");
        let link = base.path().join("junction-x");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(matches!(
            check_daemon_dir_at(&link, true),
            Err(DirError::Unsafe(_, PathProblem::Symlink))
        ));
        // Our own link to a directory the user named is followed.
        assert!(check_daemon_dir_at(&link, false).is_ok());
        let mut socket = link.clone();
        socket.push("junction.sock");
        assert_eq!(
            junction_client::path::check_client_path_as(&socket, true, euid()),
            Err((link, PathProblem::Symlink))
        );
    }

    #[test]
    fn the_lock_sits_beside_the_socket() {
        assert_eq!(
            lock_path(Path::new("/a/j.sock")),
            PathBuf::from("/a/j.sock.lock")
        );
    }

    #[test]
    fn a_lock_is_held_once_and_names_its_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j.sock.lock");
        let held = take_lock(&path).expect("first lock");
        match take_lock(&path) {
            Err(LockError::Held(pid)) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("second lock: {other:?}"),
        }
        drop(held);
        assert!(take_lock(&path).is_ok(), "free again once dropped");
        let link = dir.path().join("link.lock");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        assert!(matches!(
            take_lock(&link),
            Err(LockError::Unsafe(PathProblem::Symlink))
        ));
    }
}
