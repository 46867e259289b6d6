// The default socket path and token discovery, as the junction CLI has them.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import process from 'node:process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import * as junction from 'junction-client';

function withEnv(vars, body) {
  const saved = {};
  for (const key of ['XDG_RUNTIME_DIR', 'JUNCTION_TMPDIR', 'JUNCTION_UNIX']) {
    saved[key] = process.env[key];
    delete process.env[key];
  }
  Object.assign(process.env, vars);
  try {
    return body();
  } finally {
    for (const [key, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  }
}

test('the default socket path follows the CLI', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'junction-node-'));
  const cases = [{ XDG_RUNTIME_DIR: '/run/user/4242' }, {}, { JUNCTION_TMPDIR: tmp }];
  const expected = ['/run/user/4242/junction.sock', `/tmp/junction-${process.geteuid()}/junction.sock`, `${tmp}/junction-${process.geteuid()}/junction.sock`];
  cases.forEach((vars, i) => withEnv(vars, () => {
    assert.equal(junction.defaultSocketPath(), expected[i]);
    if (process.env.JUNCTION_CLI) {
      assert.equal(execFileSync(process.env.JUNCTION_CLI, ['socket-path'], { encoding: 'utf8' }).trim(), expected[i]);
    }
  }));
  fs.rmSync(tmp, { recursive: true });
});

test('token files', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'junction-node-'));
  fs.mkdirSync(path.join(tmp, 'run'));
  withEnv({ XDG_RUNTIME_DIR: path.join(tmp, 'run') }, () => {
    const socket = path.join(tmp, 'd.sock');
    assert.equal(junction.findTokenFile('127.0.0.1:7710', socket), null);
    fs.writeFileSync(`${socket}.token`, '  secret-one\n');
    assert.equal(junction.findTokenFile('127.0.0.1:7710', socket), `${socket}.token`);
    assert.equal(junction.readToken(`${socket}.token`), 'secret-one');
    const byPort = path.join(tmp, 'run', 'junction-tcp-7710.token');
    fs.writeFileSync(byPort, 'agent:s3cret\n');
    assert.equal(junction.findTokenFile('127.0.0.1:7710', socket), byPort);
    assert.equal(junction.readToken(byPort), 's3cret');
    fs.rmSync(byPort);
    fs.symlinkSync(`${socket}.token`, byPort); // a symlink is never followed
    assert.equal(junction.findTokenFile('127.0.0.1:7710', socket), `${socket}.token`);
  });
  fs.rmSync(tmp, { recursive: true });
});

test('bad options are clear errors', () => {
  assert.throws(() => new junction.Client({ protocol: 'http' }), TypeError);
  assert.throws(() => new junction.Client({ tcp: 'no-port' }), TypeError);
});

test('the installed package is under test', () => {
  if (!process.env.JUNCTION_EXPECT_INSTALLED) return;
  const require = createRequire(import.meta.url);
  const file = require.resolve('junction-client/package.json');
  assert.match(file, /\/node_modules\/junction-client\/package\.json$/);
  assert.ok(!fs.lstatSync(path.dirname(file)).isSymbolicLink(), 'installed as a copy, not a link to the source');
  assert.notEqual(path.dirname(fileURLToPath(import.meta.url)), path.dirname(file));
});
