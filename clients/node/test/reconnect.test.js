// Reconnect: after the daemon restarts, a client connects again by itself,
// authenticates with the new token, and provides and subscribes again.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import * as junction from 'junction-client';

import { Daemon, ENDPOINTS, PATIENCE, options } from './helpers.js';

const fast = { backoff: [20, 500] };

test('clients reconnect and restore their names and topics after a restart', async () => {
  const daemon = await new Daemon().start();
  const made = [];
  try {
    const subscriptions = [];
    for (const [n, [protocol, transport]] of ENDPOINTS.entries()) {
      const client = await junction.connect(options(daemon, protocol, transport, fast));
      await client.provide([`re.m${n}`, `re.p${n}.*`], (call) => [n, call.method]);
      subscriptions.push(await client.subscribe(`re.t${n}.*`));
      made.push(client);
    }
    const reconnected = made.map((client) => new Promise((resolve) => client.once('reconnect', resolve)));
    await daemon.restart();
    assert.deepEqual(await Promise.all(reconnected), made.map(() => 2));
    for (const client of made) {
      await client.waitConnected(2, PATIENCE);
      assert.deepEqual(client.restoreErrors, []);
    }
    for (const [protocol, transport] of ENDPOINTS) {
      const caller = await junction.connect(options(daemon, protocol, transport));
      try {
        for (let n = 0; n < ENDPOINTS.length; n += 1) {
          assert.deepEqual(await caller.call(`re.m${n}`, [1]), [n, `re.m${n}`]);
          assert.deepEqual(await caller.call(`re.p${n}.x`, [1]), [n, `re.p${n}.x`]);
          assert.equal(await caller.publish(`re.t${n}.e`, [protocol, transport]), 1);
          const event = await subscriptions[n].next(PATIENCE);
          assert.deepEqual([event.topic, event.data], [`re.t${n}.e`, [protocol, transport]]);
        }
      } finally {
        await caller.close();
      }
    }
  } finally {
    for (const client of made) await client.close();
    await daemon.remove();
  }
});

test('calls pending at the loss fail, and later calls wait for the reconnect', async () => {
  const daemon = await new Daemon().start();
  const client = await junction.connect(options(daemon, 'mcp1', 'tcp', fast));
  try {
    const lost = new Promise((resolve) => client.once('disconnect', resolve));
    await daemon.stop();
    assert.ok((await lost) instanceof junction.ConnectionLost);
    await assert.rejects(client.call('rpc.ping', [], { timeout: 300 }), junction.ConnectionLost);
    await daemon.start();
    assert.equal(await client.call('rpc.ping'), 'pong');
    assert.equal(client.connections, 2);
  } finally {
    await client.close();
    await daemon.remove();
  }
});

test('reconnect can be turned off', async () => {
  const daemon = await new Daemon().start();
  const client = await junction.connect(options(daemon, 'jsonrpc', 'unix', { reconnect: false }));
  try {
    const lost = new Promise((resolve) => client.once('disconnect', resolve));
    await daemon.restart();
    await lost;
    await assert.rejects(client.call('rpc.ping'), junction.ConnectionLost);
    assert.equal(client.connections, 1);
  } finally {
    await client.close();
    await daemon.remove();
  }
});
