// Calls, errors, notifications, batches and raw bodies, on each endpoint.

import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import * as junction from 'junction-client';

import { ENDPOINTS, clients, options, stopShared, target, unique } from './helpers.js';

after(stopShared);

for (const [protocol, transport] of ENDPOINTS) {
  const on = `${protocol}-${transport}`;

  test(`a call returns its result [${on}]`, async (t) => {
    const client = await (await clients(t))(protocol, transport);
    assert.equal(await client.ping(), 'pong');
    assert.deepEqual(await client.call('rpc.echo', [1, 'two', { three: 3 }]), [1, 'two', { three: 3 }]);
    assert.deepEqual(await client.call('rpc.echo', { k: ['v'] }), { k: ['v'] });
    assert.equal(await client.call('rpc.echo'), null);
  });

  test(`an error answer is typed with code and message [${on}]`, async (t) => {
    const client = await (await clients(t))(protocol, transport);
    await assert.rejects(client.call('no.such.method', [1]), (error) => {
      assert.ok(error instanceof junction.MethodNotFound);
      assert.ok(error instanceof junction.RpcError);
      assert.equal(error.code, -32601);
      assert.equal(error.message, 'Method not found: no method named "no.such.method"');
      assert.equal(error.data, undefined);
      return true;
    });
    assert.equal(await client.ping(), 'pong');
  });

  test(`notifications get no answer and run [${on}]`, async (t) => {
    const connect = await clients(t);
    const provider = await connect(protocol, transport);
    const name = `${unique()}.note`;
    let seen;
    const arrived = new Promise((resolve) => { seen = resolve; });
    await provider.provide(name, (call) => seen([call.params, call.id]));
    const client = await connect(protocol, transport);
    await client.notify('rpc.ping');
    await client.notify('no.such.method');
    await client.notify(name, ['hello']);
    assert.deepEqual(await client.call('rpc.echo', ['after']), ['after']);
    assert.deepEqual(await arrived, [['hello'], null]);
  });

  test(`a batch answers each entry in order [${on}]`, async (t) => {
    const client = await (await clients(t))(protocol, transport);
    const results = await client.batch([
      'rpc.ping',
      ['rpc.echo', [1, 2]],
      junction.notification('rpc.ping'),
      ['nope'],
      ['rpc.echo', { k: 'v' }],
    ]);
    assert.equal(results[0], 'pong');
    assert.deepEqual(results[1], [1, 2]);
    assert.equal(results[2], undefined);
    assert.ok(results[3] instanceof junction.MethodNotFound);
    assert.deepEqual(results[4], { k: 'v' });
    assert.deepEqual(await client.batch([junction.notification('rpc.ping')]), [undefined]);
    assert.deepEqual(await client.batch([]), []);
  });

  test(`many calls in flight [${on}]`, async (t) => {
    const client = await (await clients(t))(protocol, transport);
    const numbers = Array.from({ length: 300 }, (_, n) => n);
    const answers = await Promise.all(numbers.map((n) => client.call('rpc.echo', [n])));
    assert.deepEqual(answers, numbers.map((n) => [n]));
  });

  test(`a call times out [${on}]`, async (t) => {
    const connect = await clients(t);
    const provider = await connect(protocol, transport);
    const name = `${unique()}.slow`;
    let release;
    const released = new Promise((resolve) => { release = resolve; });
    await provider.provide(name, () => released);
    const client = await connect(protocol, transport);
    await assert.rejects(client.call(name, [], { timeout: 200 }), junction.CallTimeout);
    release(null);
    assert.equal(await client.ping(), 'pong');
  });
}

for (const transport of ['unix', 'tcp']) {
  test(`raw bodies travel over MCP1 [${transport}]`, async (t) => {
    const client = await (await clients(t))('mcp1', transport);
    const raw = await client.call('rpc.echo', Buffer.from([0, 0xff, 0x72, 0x0a]));
    assert.ok(Buffer.isBuffer(raw));
    assert.deepEqual([...raw], [0, 0xff, 0x72, 0x0a]);
    assert.deepEqual([...(await client.call('rpc.echo', new Uint8Array([1, 2])))], [1, 2]);
    assert.equal(await client.call('rpc.echo', 'text'), 'text');
    assert.equal(await client.call('rpc.echo', 5), 5);
  });
}

test('raw bodies need MCP1', async (t) => {
  const client = await (await clients(t))('jsonrpc', 'unix');
  await assert.rejects(client.call('rpc.echo', Buffer.from([0])), TypeError);
  await assert.rejects(client.call('rpc.echo', 'not an array'), TypeError);
});

test('TCP without a token is refused', async () => {
  const where = await target();
  for (const protocol of ['jsonrpc', 'mcp1']) {
    const client = await junction.connect(options(where, protocol, 'tcp', { auth: false, reconnect: false }));
    try {
      await assert.rejects(client.call('rpc.ping'), (error) => {
        assert.ok(error instanceof junction.Unauthorized);
        assert.equal(error.code, -32007);
        assert.match(error.message, /authentication required/);
        return true;
      });
      await assert.rejects(client.call('rpc.ping'), junction.ConnectionLost);
    } finally {
      await client.close();
    }
  }
});

test('TCP with a wrong token is refused', async () => {
  const where = await target();
  for (const protocol of ['jsonrpc', 'mcp1']) {
    await assert.rejects(junction.connect(options(where, protocol, 'tcp', { token: 'wrong', reconnect: false })), (error) => {
      assert.ok(error instanceof junction.Unauthorized);
      assert.equal(error.message, 'Unauthorized: authentication failed: wrong token');
      return true;
    });
  }
});

test('a missing socket is a clear error', async () => {
  await assert.rejects(junction.connect({ unix: '/nonexistent/none.sock' }), (error) => {
    assert.ok(error instanceof junction.ConnectionLost);
    assert.match(error.message, /none\.sock/);
    return true;
  });
});

test('a closed client says so', async () => {
  const where = await target();
  const client = await junction.connect(options(where, 'jsonrpc', 'unix'));
  await client.close();
  await client.close(); // twice is fine
  await assert.rejects(client.call('rpc.ping'), junction.ConnectionLost);
});
