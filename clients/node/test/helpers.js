// The daemon the suite runs against, and clients on each of its endpoints.
//
// `cargo test --test client_packages` starts junctiond and says where it is:
// JUNCTION_TEST_UNIX (its socket; the token is beside it) and JUNCTION_TEST_TCP.
// Without them, a daemon of the suite's own is started from JUNCTIOND (default:
// `junctiond` on PATH); the reconnect tests always start their own, to restart it.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import process from 'node:process';

import { connect } from 'junction-client';

/** Milliseconds any single wait may take before a test fails (a hang guard). */
export const PATIENCE = 20_000;

export const ENDPOINTS = [['jsonrpc', 'unix'], ['jsonrpc', 'tcp'], ['mcp1', 'unix'], ['mcp1', 'tcp']];

const DAEMON_ENV = ['JUNCTION_CONFIG', 'JUNCTION_UNIX', 'JUNCTION_TCP', 'JUNCTION_AUTH_TOKEN_FILE', 'JUNCTION_TCP_ANONYMOUS'];

/** A junctiond of the suite's own, on a temp socket and a loopback port. */
export class Daemon {
  constructor() {
    this.binary = process.env.JUNCTIOND || 'junctiond';
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'junction-node-'));
    this.unix = path.join(this.dir, 'junction.sock');
    this.port = 0;
    this.child = null;
  }

  get tcp() {
    return `127.0.0.1:${this.port}`;
  }

  async start() {
    const env = { ...process.env };
    for (const name of DAEMON_ENV) delete env[name];
    const child = spawn(this.binary, ['--unix', this.unix, '--tcp', `127.0.0.1:${this.port}`, '--log', 'info'], {
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.child = child;
    this.port = await new Promise((resolve, reject) => {
      let text = '';
      const timer = setTimeout(() => reject(new Error(`junctiond did not say where it listens:\n${text}`)), PATIENCE);
      child.stderr.on('data', (chunk) => {
        text += chunk.toString();
        const found = /listening on tcp 127\.0\.0\.1:(\d+)/.exec(text);
        if (found) {
          clearTimeout(timer);
          text = '';
          resolve(Number(found[1]));
        }
      });
      child.once('exit', (code) => reject(new Error(`junctiond exited (${code}) at start:\n${text}`)));
      child.once('error', reject);
    });
    return this;
  }

  async stop() {
    const child = this.child;
    if (!child) return;
    this.child = null;
    if (child.exitCode === null && child.signalCode === null) {
      await new Promise((resolve) => {
        child.once('exit', resolve);
        child.kill('SIGTERM');
      });
    }
  }

  /** Stops the daemon and starts it again on the same socket and port (with a new token). */
  async restart() {
    await this.stop();
    await this.start();
  }

  async remove() {
    await this.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

let shared = null;

/** {unix, tcp} of the daemon under test. */
export async function target() {
  if (process.env.JUNCTION_TEST_UNIX && process.env.JUNCTION_TEST_TCP) {
    return { unix: process.env.JUNCTION_TEST_UNIX, tcp: process.env.JUNCTION_TEST_TCP };
  }
  if (!shared) {
    const daemon = new Daemon();
    shared = daemon.start().then(() => daemon);
    process.on('exit', () => daemon.child?.kill('SIGTERM'));
  }
  const daemon = await shared;
  return { unix: daemon.unix, tcp: daemon.tcp };
}

/** Stops the suite's own shared daemon, if it started one (call in an `after` hook). */
export async function stopShared() {
  if (shared) await (await shared).remove();
  shared = null;
}

/** Client options for one endpoint: over TCP, `unix` says where the token is. */
export function options(where, protocol, transport, extra = {}) {
  return { unix: where.unix, protocol, timeout: PATIENCE, ...(transport === 'tcp' ? { tcp: where.tcp } : {}), ...extra };
}

/** A connect(protocol, transport, extra) that closes its clients when the test ends. */
export async function clients(t) {
  const where = await target();
  const made = [];
  t.after(async () => {
    for (const client of made) await client.close();
  });
  const make = async (protocol = 'jsonrpc', transport = 'unix', extra = {}) => {
    const client = await connect(options(where, protocol, transport, extra));
    made.push(client);
    return client;
  };
  make.where = where;
  return make;
}

let counter = 0;
/** A name prefix no other test uses (the daemon is shared). */
export function unique() {
  counter += 1;
  return `js${process.pid}t${counter}`;
}
