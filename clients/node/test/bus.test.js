// The service bus: providing methods (names and patterns) and events with
// pattern subscriptions, across protocols and transports.

import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import * as junction from 'junction-client';

import { ENDPOINTS, PATIENCE, clients, stopShared, unique } from './helpers.js';

after(stopShared);

for (const provider of ENDPOINTS) {
  for (const caller of ENDPOINTS) {
    test(`a provided method is called from another client [${provider.join('-')} to ${caller.join('-')}]`, async (t) => {
      const connect = await clients(t);
      const server = await connect(...provider);
      const prefix = unique();
      const calls = [];
      assert.deepEqual(await server.provide(`${prefix}.add`, ({ method, params: [a, b] }) => {
        calls.push(method);
        return a + b;
      }), [`${prefix}.add`]);
      await server.provide(`${prefix}.fail`, (call) => {
        throw new junction.RpcError(4711, 'failed on purpose', { why: call.method });
      });
      await server.provide(`${prefix}.calc.*`, async (call) => call.method.split('.').pop());
      const client = await connect(...caller);
      assert.equal(await client.call(`${prefix}.add`, [2, 3]), 5);
      assert.deepEqual(calls, [`${prefix}.add`]);
      assert.equal(await client.call(`${prefix}.calc.mul`, [1]), 'mul');
      await assert.rejects(client.call(`${prefix}.fail`, []), (error) => {
        assert.equal(error.constructor, junction.RpcError);
        assert.deepEqual([error.code, error.message, error.data], [4711, 'failed on purpose', { why: `${prefix}.fail` }]);
        return true;
      });
      const names = (await client.busList()).names.map((entry) => entry.name);
      assert.ok(names.includes(`${prefix}.add`) && names.includes(`${prefix}.calc.*`));
      assert.deepEqual(await server.unprovide(`${prefix}.add`), [`${prefix}.add`]);
      await assert.rejects(client.call(`${prefix}.add`, [2, 3]), junction.MethodNotFound);
    });
  }
}

for (const [protocol, transport] of ENDPOINTS) {
  const on = `${protocol}-${transport}`;

  test(`bus errors are typed and carry their data [${on}]`, async (t) => {
    const connect = await clients(t);
    const first = await connect(protocol, transport);
    const second = await connect(protocol, transport);
    const name = `${unique()}.taken`;
    await first.provide(name, () => null);
    await assert.rejects(second.provide(name, () => null), (error) => {
      assert.ok(error instanceof junction.NameTaken);
      assert.equal(error.data.name, name);
      assert.equal(error.data.owner.transport, transport);
      return true;
    });
    await assert.rejects(second.provide('rpc.mine', () => null), junction.InvalidParams);
  });

  test(`a failing handler answers internal error [${on}]`, async (t) => {
    const connect = await clients(t);
    const server = await connect(protocol, transport);
    const name = `${unique()}.boom`;
    await server.provide(name, () => { throw new TypeError('no way'); });
    await assert.rejects((await connect(protocol, transport)).call(name), (error) => {
      assert.ok(error instanceof junction.InternalError);
      assert.match(error.message, /TypeError: no way/);
      return true;
    });
  });

  test(`a handler may call through its own client [${on}]`, async (t) => {
    const connect = await clients(t);
    const server = await connect(protocol, transport);
    const name = `${unique()}.nested`;
    await server.provide(name, async (call) => server.call('rpc.echo', [call.params[0] * 2]));
    assert.deepEqual(await (await connect(protocol, transport)).call(name, [21]), [42]);
  });

  for (const publisher of ENDPOINTS) {
    test(`subscribe to a pattern and receive what is published [${on} from ${publisher.join('-')}]`, async (t) => {
      const connect = await clients(t);
      const subscriber = await connect(protocol, transport);
      const prefix = unique();
      const sub = await subscriber.subscribe(`${prefix}.build.*`);
      const exact = await subscriber.subscribe([`${prefix}.deploy`]);
      const source = await connect(...publisher);
      assert.equal(await source.publish(`${prefix}.other`, { n: 0 }), 0);
      assert.equal(await source.publish(`${prefix}.build.done`, { ok: true, n: 1 }), 1);
      assert.equal(await source.publish(`${prefix}.deploy`, [2]), 1);
      assert.deepEqual(await sub.next(PATIENCE), { topic: `${prefix}.build.done`, data: { ok: true, n: 1 }, dropped: 0 });
      assert.deepEqual(await exact.next(PATIENCE), { topic: `${prefix}.deploy`, data: [2], dropped: 0 });
      await sub.unsubscribe();
      assert.equal(await source.publish(`${prefix}.build.done`, null), 0);
    });
  }

  test(`event callbacks and the iterator see events in order [${on}]`, async (t) => {
    const connect = await clients(t);
    const subscriber = await connect(protocol, transport);
    const prefix = unique();
    const got = [];
    let finished;
    const done = new Promise((resolve) => { finished = resolve; });
    await subscriber.subscribe(`${prefix}.seq.*`, (event) => {
      got.push(event.data);
      if (got.length === 50) finished();
    });
    const iterated = await subscriber.subscribe(`${prefix}.seq.n`);
    const publisher = await connect(protocol, transport);
    for (let n = 0; n < 50; n += 1) await publisher.publish(`${prefix}.seq.n`, n);
    await done;
    assert.deepEqual(got, Array.from({ length: 50 }, (_, n) => n));
    const seen = [];
    for await (const event of iterated) {
      seen.push(event.data);
      if (seen.length === 50) break;
    }
    assert.deepEqual(seen, got);
  });
}

for (const transport of ['unix', 'tcp']) {
  test(`raw params and results through the bus [${transport}]`, async (t) => {
    const connect = await clients(t);
    const server = await connect('mcp1', transport);
    const name = `${unique()}.rev`;
    await server.provide(name, (call) => (call.raw ? Buffer.from([...call.params].reverse()) : Buffer.from('raw answer')));
    const answer = await (await connect('mcp1', transport)).call(name, Buffer.from([1, 2, 3]));
    assert.deepEqual([...answer], [3, 2, 1]);
    await assert.rejects((await connect('jsonrpc', transport)).call(name, [1]), junction.UnsupportedEncoding);
  });
}

for (const [protocol, transport] of ENDPOINTS) {
  test(`a cancelled call aborts its handler's signal [${protocol}-${transport}]`, async (t) => {
    const connect = await clients(t);
    const server = await connect(protocol, transport);
    const name = `${unique()}.forever`;
    let started;
    const running = new Promise((resolve) => { started = resolve; });
    let aborted;
    const cancelled = new Promise((resolve) => { aborted = resolve; });
    await server.provide(name, (call) => {
      call.signal.addEventListener('abort', () => aborted(call.signal.reason));
      started();
      return new Promise(() => {}); // never answers
    });
    // The caller on the Unix socket: its close is a hang-up the daemon sees at once.
    const caller = await connect('mcp1', 'unix', { reconnect: false });
    const pending = caller.call(name);
    await running;
    await caller.close();
    await assert.rejects(pending, junction.ConnectionLost);
    assert.match(String((await cancelled).message), /caller gone/);
  });
}
