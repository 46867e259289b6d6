// The README's example runs as it is, against the daemon (found through
// JUNCTION_UNIX, as a user's would be through the default path).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import process from 'node:process';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { stopShared, target } from './helpers.js';

after(stopShared);

test('the README example runs', async () => {
  const require = createRequire(import.meta.url);
  const root = path.dirname(require.resolve('junction-client/package.json'));
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
  const found = /```js\n([\s\S]*?)```/.exec(readme);
  assert.ok(found, 'no js example in README.md');
  const example = found[1];
  assert.ok(example.trim().split('\n').length <= 12, 'the example is short');
  const where = await target();
  // Run from this directory, where `junction-client` resolves as it does for the tests.
  const output = execFileSync(process.execPath, ['--input-type=module', '-e', example], {
    cwd: path.dirname(fileURLToPath(import.meta.url)),
    env: { ...process.env, JUNCTION_UNIX: where.unix },
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.deepEqual(output.trim().split('\n'), ['pong', '5', 'build.done { ok: true }']);
});
