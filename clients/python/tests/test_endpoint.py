"""The default socket path and token discovery, as the junction CLI has them."""

import os
import subprocess

import pytest

import junction


def test_default_socket_path_follows_the_cli(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/4242")
    assert junction.default_socket_path() == "/run/user/4242/junction.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.delenv("JUNCTION_TMPDIR", raising=False)
    assert junction.default_socket_path() == f"/tmp/junction-{os.geteuid()}/junction.sock"
    monkeypatch.setenv("JUNCTION_TMPDIR", str(tmp_path))
    assert junction.default_socket_path() == f"{tmp_path}/junction-{os.geteuid()}/junction.sock"
    cli = os.environ.get("JUNCTION_CLI")
    if cli:
        for env in ({"XDG_RUNTIME_DIR": "/run/user/4242"}, {"JUNCTION_TMPDIR": str(tmp_path)}):
            for key in ("XDG_RUNTIME_DIR", "JUNCTION_TMPDIR", "JUNCTION_UNIX"):
                monkeypatch.delenv(key, raising=False)
            for key, value in env.items():
                monkeypatch.setenv(key, value)
            printed = subprocess.run([cli, "socket-path"], capture_output=True, text=True, check=True)
            assert printed.stdout.strip() == junction.default_socket_path()


def test_token_files(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    os.mkdir(tmp_path / "run")
    socket = tmp_path / "d.sock"
    assert junction.find_token_file("127.0.0.1:7710", str(socket)) is None
    (tmp_path / "d.sock.token").write_text("  secret-one\n")
    assert junction.find_token_file("127.0.0.1:7710", str(socket)) == str(tmp_path / "d.sock.token")
    assert junction.read_token(str(tmp_path / "d.sock.token")) == "secret-one"
    by_port = tmp_path / "run" / "junction-tcp-7710.token"
    by_port.write_text("agent:s3cret\n")
    assert junction.find_token_file("127.0.0.1:7710", str(socket)) == str(by_port)
    assert junction.read_token(str(by_port)) == "agent:s3cret".split(":")[1]
    # A symlink is never followed.
    os.remove(by_port)
    os.symlink(tmp_path / "d.sock.token", by_port)
    assert junction.find_token_file("127.0.0.1:7710", str(socket)) == str(tmp_path / "d.sock.token")


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError):
        junction.AsyncClient(protocol="http")
    with pytest.raises(ValueError):
        junction.AsyncClient(tcp="no-port")


def test_the_installed_package_is_under_test():
    """Under cargo test, the package pip installed is tested, not the source tree."""
    if os.environ.get("JUNCTION_EXPECT_INSTALLED"):
        assert "site-packages" in junction.__file__, junction.__file__
