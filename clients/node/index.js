// junction-client: a client for junctiond (JSON-RPC 2.0 and MCP1 over its
// Unix socket or TCP) with promises. Node core only.
//
//   import { connect } from 'junction-client';
//   const client = await connect();            // the default Unix socket
//   console.log(await client.call('rpc.echo', [1, 2]));
//   await client.close();

export { Client, Subscription, connect, notification, matches, DEFAULT_TIMEOUT, DEFAULT_MAX_MESSAGE, DEFAULT_QUEUE } from './lib/client.js';
export { defaultSocketPath, findTokenFile, readToken } from './lib/endpoint.js';
export * from './lib/errors.js';
