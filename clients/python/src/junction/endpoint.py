"""Where the daemon is, and the token TCP connections authenticate with,
found the way the ``junction`` CLI finds them (``junction socket-path``,
docs/security.md "Tokens")."""

from __future__ import annotations

import os
import stat
from typing import Optional, Tuple

__all__ = ["default_socket_path", "find_token_file", "read_token", "split_address"]


def _env(name: str) -> Optional[str]:
    value = os.environ.get(name)
    return value if value else None


def default_socket_path() -> str:
    """The daemon's default Unix socket: ``$XDG_RUNTIME_DIR/junction.sock``,
    else ``$JUNCTION_TMPDIR/junction-<euid>/junction.sock`` (``/tmp`` when
    JUNCTION_TMPDIR is unset), as ``junction socket-path`` prints it."""
    runtime = _env("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "junction.sock")
    base = _env("JUNCTION_TMPDIR") or "/tmp"
    return os.path.join(base, f"junction-{os.geteuid()}", "junction.sock")


def split_address(address: str) -> Tuple[str, int]:
    """``"127.0.0.1:7710"`` or ``"[::1]:7710"`` as (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a TCP address is HOST:PORT, got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _own_readable_file(path: str) -> bool:
    """A regular file (not a symlink) of this user that it can read: a token
    file planted by someone else is never sent."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and os.access(path, os.R_OK)


def find_token_file(tcp: str, unix: Optional[str] = None) -> Optional[str]:
    """The token a client of the daemon's user can read by itself: that of a
    daemon without a Unix socket (``junction-tcp-<port>.token`` in the
    default socket's directory), then the one beside the Unix socket
    (``unix``, else the default: ``<socket>.token``). None when neither is
    a readable regular file of this user."""
    candidates = []
    try:
        _, port = split_address(tcp)
        directory = os.path.dirname(default_socket_path())
        candidates.append(os.path.join(directory, f"junction-tcp-{port}.token"))
    except ValueError:
        pass
    candidates.append((unix or default_socket_path()) + ".token")
    for path in candidates:
        if _own_readable_file(path):
            return path
    return None


def read_token(path: str) -> str:
    """The secret to send from a token file: its content without surrounding
    whitespace, or SECRET when it is one ``NAME:SECRET`` line."""
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", "replace").strip()
    name, sep, secret = text.partition(":")
    if sep and "\n" not in text and name and all((c.isascii() and c.isalnum()) or c in "-_." for c in name) and len(name) <= 64:
        return secret.strip()
    return text
