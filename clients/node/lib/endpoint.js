// Where the daemon is, and the token TCP connections authenticate with, found
// the way the `junction` CLI finds them (`junction socket-path`, docs/security.md).

import fs from 'node:fs';
import path from 'node:path';
import process from 'node:process';

function env(name) {
  const value = process.env[name];
  return value ? value : undefined;
}

/**
 * The daemon's default Unix socket: `$XDG_RUNTIME_DIR/junction.sock`, else
 * `$JUNCTION_TMPDIR/junction-<euid>/junction.sock` (`/tmp` by default).
 */
export function defaultSocketPath() {
  const runtime = env('XDG_RUNTIME_DIR');
  if (runtime) return path.join(runtime, 'junction.sock');
  const base = env('JUNCTION_TMPDIR') ?? '/tmp';
  return path.join(base, `junction-${process.geteuid()}`, 'junction.sock');
}

/** `"127.0.0.1:7710"` or `"[::1]:7710"` as `{host, port}`. */
export function splitAddress(address) {
  const at = String(address).lastIndexOf(':');
  let host = at > 0 ? address.slice(0, at) : '';
  const port = at > 0 ? address.slice(at + 1) : '';
  if (!host || !/^\d+$/.test(port) || Number(port) < 1 || Number(port) > 65535) {
    throw new TypeError(`a TCP address is HOST:PORT, got ${JSON.stringify(address)}`);
  }
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  return { host, port: Number(port) };
}

function ownReadableFile(file) {
  try {
    const info = fs.lstatSync(file);
    if (!info.isFile() || info.uid !== process.geteuid()) return false;
    fs.accessSync(file, fs.constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The token a client of the daemon's user can read by itself: that of a
 * daemon without a Unix socket (`junction-tcp-<port>.token` beside the default
 * socket), then `<socket>.token` beside `unix` (else the default socket).
 * Only a regular file (not a symlink) of this user counts; null when none.
 */
export function findTokenFile(tcp, unix) {
  const candidates = [];
  try {
    const { port } = splitAddress(tcp);
    candidates.push(path.join(path.dirname(defaultSocketPath()), `junction-tcp-${port}.token`));
  } catch {
    // no port: only the token beside the socket
  }
  candidates.push(`${unix || defaultSocketPath()}.token`);
  return candidates.find(ownReadableFile) ?? null;
}

/** The secret in a token file: its trimmed content, or SECRET of one `NAME:SECRET` line. */
export function readToken(file) {
  const text = fs.readFileSync(file, 'utf8').trim();
  const colon = text.indexOf(':');
  if (colon > 0 && !text.includes('\n')) {
    const name = text.slice(0, colon);
    if (name.length <= 64 && /^[A-Za-z0-9._-]+$/.test(name)) return text.slice(colon + 1).trim();
  }
  return text;
}
