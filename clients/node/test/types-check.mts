// Compiled (not run) with tsc --strict against index.d.ts, by
// tests/client_packages.rs: a typed use of every part of the API.

import {
  Client, Subscription, connect, notification, CallTimeout, ConnectionLost, MethodNotFound,
  NameTaken, RpcError, defaultSocketPath, findTokenFile, readToken,
  type Call, type Event, type ConnectOptions,
} from 'junction-client';

async function main(): Promise<void> {
  const options: ConnectOptions = { unix: defaultSocketPath(), protocol: 'mcp1', timeout: 1000, backoff: [10, 100] };
  const client: Client = await connect(options);
  const pong: string = await client.ping();
  const sum = await client.call<number>('calc.add', [1, 2], { timeout: null });
  const raw = await client.call<Uint8Array>('rpc.echo', new Uint8Array([1]));
  await client.notify('rpc.ping');
  const results: any[] = await client.batch(['rpc.ping', ['rpc.echo', [1]], notification('rpc.ping')]);
  const names: string[] = await client.provide(['demo.add', 'demo.*'], (call: Call) => {
    call.signal.addEventListener('abort', () => {});
    if (call.raw) return call.params as Uint8Array;
    throw new RpcError(4711, 'no', { why: call.method });
  });
  await client.provide('demo.async', async (call) => ({ method: call.method, id: call.id }));
  await client.unprovide('demo.add');
  const sub: Subscription = await client.subscribe('build.*', (event: Event) => { void event.topic; });
  const queued = await client.subscribe(['a', 'b.*'], { maxsize: 10 });
  const event: Event = await queued.next(100);
  for await (const e of queued) void e.data;
  await sub.unsubscribe();
  const count: number = await client.publish('build.done', { ok: true });
  const listing = await client.busList();
  void listing.names[0].name;
  client.on('reconnect', (n: number) => void n);
  client.on('disconnect', (error: Error) => void error);
  await client.waitConnected(2, 1000);
  const lost = new ConnectionLost('x');
  const timedOut = new CallTimeout('y');
  const notFound: RpcError = new MethodNotFound('Method not found', null);
  const code: number = NameTaken.code;
  const file: string | null = findTokenFile('127.0.0.1:7710', null);
  const token: string = readToken('/dev/null');
  void [pong, sum, raw, results, names, event, count, lost, timedOut, notFound, code, file, token];
  await client.close();
}

void main;
