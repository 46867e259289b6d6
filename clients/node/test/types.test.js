// index.d.ts against the code: every name it declares is exported, with the
// kind it declares, and every method it gives Client and Subscription exists.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { test } from 'node:test';

import * as junction from 'junction-client';

const require = createRequire(import.meta.url);
const root = path.dirname(require.resolve('junction-client/package.json'));
const declarations = fs.readFileSync(path.join(root, 'index.d.ts'), 'utf8');

function block(name) {
  const start = declarations.indexOf(`export class ${name} `);
  assert.ok(start >= 0, `class ${name} in index.d.ts`);
  return declarations.slice(start, declarations.indexOf('\n}\n', start));
}

test('package.json points at the types and the module', () => {
  const meta = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  assert.equal(meta.types, './index.d.ts');
  assert.equal(meta.type, 'module');
  assert.ok(fs.existsSync(path.join(root, meta.types)));
  assert.equal(meta.exports['.'].types, './index.d.ts');
});

test('every declared export exists with its kind, and nothing exported is undeclared', () => {
  const declared = new Map();
  for (const [, kind, name] of declarations.matchAll(/^export (class|function|const) (\w+)/gm)) declared.set(name, kind);
  assert.ok(declared.size > 30);
  for (const [name, kind] of declared) {
    assert.ok(name in junction, `${name} is declared but not exported`);
    const value = junction[name];
    if (kind === 'class' || kind === 'function') assert.equal(typeof value, 'function', name);
    if (kind === 'const' && name.endsWith('Error') === false && /^[A-Z][a-z]/.test(name)) {
      assert.equal(typeof value, 'function', `${name} (an error class)`);
    }
  }
  for (const name of Object.keys(junction)) assert.ok(declared.has(name), `${name} is exported but not declared`);
});

test('the error classes declared have their codes', () => {
  for (const [, name] of declarations.matchAll(/^export const (\w+): RpcErrorClass;/gm)) {
    const cls = junction[name];
    assert.equal(junction.ERROR_CLASSES.get(cls.code), cls, name);
    const error = new cls('text', { d: 1 });
    assert.ok(error instanceof junction.RpcError);
    assert.equal(error.name, name);
    assert.deepEqual([error.code, error.message, error.data], [cls.code, 'text', { d: 1 }]);
  }
});

test('the methods declared on Client and Subscription exist', () => {
  for (const [name, cls] of [['Client', junction.Client], ['Subscription', junction.Subscription]]) {
    const members = [...block(name).matchAll(/^ {2}(?:readonly )?(\w+)(\??)(\(|<|:)/gm)];
    assert.ok(members.length > 3, name);
    const sample = name === 'Client' ? new junction.Client({ unix: '/nonexistent' }) : new junction.Subscription(null, ['t'], null, 1);
    for (const [, member, , sign] of members) {
      if (member === 'constructor' || member === 'on') continue;
      assert.ok(member in sample, `${name}.${member} is declared but missing`);
      if (sign === '(' || sign === '<') assert.equal(typeof sample[member], 'function', `${name}.${member}`);
    }
  }
});
