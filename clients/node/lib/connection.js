// One connection to junctiond, in JSON-RPC 2.0 or MCP1, over its Unix socket
// or TCP, and the calls over it, with promises.
//
// What the daemon sends is decoded as it arrives: answers go to the calls
// waiting for them (matched by id); calls the bus forwards and events go to
// the hooks Client fills in. When the connection is lost, waiting calls fail
// with ConnectionLost; unless `reconnect: false`, the connection is made again
// with exponential backoff, authenticated again (the token file is read
// afresh: the daemon makes a new token at each start), and the subclass
// restores what it had (`_restore`).

import { EventEmitter } from 'node:events';
import net from 'node:net';
import process from 'node:process';

import { defaultSocketPath, findTokenFile, readToken, splitAddress } from './endpoint.js';
import {
  CLOSING_CODES, CallTimeout, ConnectionLost, JunctionError, ProtocolError, RpcError,
} from './errors.js';
import * as wire from './wire.js';

/** Milliseconds a call waits for its answer unless told otherwise. */
export const DEFAULT_TIMEOUT = 30_000;
/** The longest line or frame payload read from the daemon (bounds this client's memory). */
export const DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024;

/** A batch entry that is a notification (no answer). */
export function notification(method, params) {
  return { method, params, notification: true };
}

/**
 * A connection to junctiond and the calls over it; Client adds the service bus.
 * Events: 'disconnect' (error), 'reconnect' (count).
 */
export class Connection extends EventEmitter {
  constructor(options = {}) {
    super();
    const protocol = options.protocol ?? process.env.JUNCTION_PROTO ?? 'jsonrpc';
    if (protocol !== 'jsonrpc' && protocol !== 'mcp1') {
      throw new TypeError(`protocol is 'jsonrpc' or 'mcp1', got ${JSON.stringify(protocol)}`);
    }
    this.protocol = protocol;
    this.unix = options.unix || process.env.JUNCTION_UNIX || defaultSocketPath();
    this.tcp = options.tcp ?? null;
    if (this.tcp) splitAddress(this.tcp); // a clear error now rather than at connect
    this.timeout = options.timeout === undefined ? DEFAULT_TIMEOUT : options.timeout;
    this.reconnect = options.reconnect ?? true;
    this.backoff = options.backoff ?? [50, 2000];
    this.maxMessage = options.maxMessage ?? DEFAULT_MAX_MESSAGE;
    this.connections = 0;
    this._token = options.token ?? null;
    this._tokenFile = options.tokenFile || process.env.JUNCTION_AUTH_TOKEN_FILE || null;
    this._auth = options.auth ?? true;
    this._authenticated = false; // a token has been accepted: reconnects need one too
    this._nextId = 1;
    this._socket = null;
    this._connected = false;
    this._closed = false;
    this._fatal = null;
    this._pending = new Map(); // id -> {resolve, reject}
    this._batches = new Map(); // first id -> {resolve, reject}
    this._batchOf = new Map(); // id -> first id of its batch
    this._reconnecting = null;
    this._connectWaiters = [];
  }

  /** `tcp:HOST:PORT` or `unix:PATH`. */
  get address() {
    return this.tcp ? `tcp:${this.tcp}` : `unix:${this.unix}`;
  }

  get connected() {
    return this._connected && this._fatal === null;
  }

  _secret() {
    if (this._token !== null) return this._token;
    const file = this._tokenFile ?? findTokenFile(this.tcp ?? '', this.unix);
    return file ? readToken(file) : null;
  }

  /** Connects (and authenticates, on TCP). */
  async open() {
    await this._open(false);
    return this;
  }

  async _open(restore) {
    let secret = null;
    if (this.tcp && this._auth) {
      secret = this._secret();
      // A restarted daemon writes its new token as it starts: until it has,
      // connecting without one would only be refused.
      if (secret === null && this._authenticated) throw new ConnectionLost('no token to authenticate with yet');
    }
    const socket = await new Promise((resolve, reject) => {
      const target = this.tcp ? splitAddress(this.tcp) : { path: this.unix };
      const s = net.createConnection(target);
      const failed = (e) => {
        s.destroy();
        reject(new ConnectionLost(`cannot connect to ${this.address}: ${e.message}`, { cause: e }));
      };
      s.once('error', failed);
      s.once('connect', () => {
        s.off('error', failed);
        resolve(s);
      });
    });
    if (this.tcp) socket.setNoDelay(true);
    this._attach(socket);
    try {
      if (secret !== null) {
        await this._request('rpc.auth', { token: secret }, this.timeout, false);
        this._authenticated = true;
      }
      if (restore) await this._restore();
    } catch (e) {
      this._drop(socket, null);
      throw e;
    }
    this.connections += 1;
    this._connected = true;
    for (const waiter of this._connectWaiters.splice(0)) waiter();
    if (restore) this.emit('reconnect', this.connections);
  }

  /** After a reconnect, before the client counts as connected: Client registers and subscribes again. */
  async _restore() {}

  /** Waits until this client has connected `connections` times in all and is connected. */
  async waitConnected(connections = 1, timeoutMs) {
    const deadline = timeoutMs === undefined ? null : Date.now() + timeoutMs;
    while (!(this.connections >= connections && this.connected)) {
      if (this._closed) throw new ConnectionLost('the client is closed');
      const left = deadline === null ? null : deadline - Date.now();
      if (left !== null && left <= 0) throw new CallTimeout(`not connected ${connections} times within ${timeoutMs} ms`);
      await this._nextConnect(left);
    }
  }

  _nextConnect(timeoutMs) {
    return new Promise((resolve) => {
      const waiter = () => { clearTimeout(timer); resolve(); };
      const timer = timeoutMs === null ? null : setTimeout(() => {
        const at = this._connectWaiters.indexOf(waiter);
        if (at >= 0) this._connectWaiters.splice(at, 1);
        resolve();
      }, timeoutMs);
      this._connectWaiters.push(waiter);
    });
  }

  async _reconnectLoop() {
    let delay = this.backoff[0];
    while (!this._closed) {
      await new Promise((resolve) => setTimeout(resolve, delay * (0.5 + Math.random() / 2)));
      if (this._closed) return;
      try {
        await this._open(true);
        return;
      } catch {
        // not yet: the daemon is still down, or its token not written yet
      }
      delay = Math.min(delay * 2, this.backoff[1]);
    }
  }

  /** Closes the connection and stops reconnecting; waiting calls fail with ConnectionLost. */
  async close() {
    this._closed = true;
    for (const waiter of this._connectWaiters.splice(0)) waiter();
    if (this._socket) this._drop(this._socket, new ConnectionLost('the client was closed'));
    this._onClose();
  }

  // --- reading --------------------------------------------------------------

  _attach(socket) {
    this._socket = socket;
    this._fatal = null;
    const queue = new wire.ByteQueue();
    let failure = null;
    socket.on('data', (chunk) => {
      if (failure) return;
      queue.push(chunk);
      try {
        for (let message = this._decode(queue); message; message = this._decode(queue)) {
          this._dispatch(message, socket);
        }
      } catch (e) {
        failure = e;
        socket.destroy();
      }
    });
    socket.on('error', (e) => {
      failure ??= e;
    });
    socket.on('close', () => this._drop(socket, failure));
  }

  /** The next whole message in `queue`, or null. */
  _decode(queue) {
    if (this.protocol === 'jsonrpc') {
      const at = queue.indexOf(0x0a);
      if (at < 0) {
        if (queue.length > this.maxMessage) throw new ProtocolError(`the daemon sent a line over ${this.maxMessage} bytes`);
        return null;
      }
      let line = queue.take(at + 1).subarray(0, at);
      if (line.length && line[line.length - 1] === 0x0d) line = line.subarray(0, -1);
      return wire.jsonrpcParse(line);
    }
    for (;;) {
      if (queue.length < 4) return null;
      const head = queue.peek(4);
      if (!head.equals(wire.MAGIC)) {
        if (head[0] === 0x7b) { // '{': a JSON-RPC refusal at accept
          const at = queue.indexOf(0x0a);
          if (at < 0) return null;
          const error = wire.refusal(queue.take(at + 1));
          if (!error) throw new ProtocolError('bad magic from server');
          this._fatal = error;
          return null;
        }
        throw new ProtocolError(`bad magic from server: ${head.toString('latin1')}`);
      }
      if (queue.length < wire.HEADER_SIZE) return null;
      const header = queue.peek(wire.HEADER_SIZE);
      if (header[4] !== 1) throw new ProtocolError(`the daemon sent MCP1 version ${header[4]}`);
      const length = header.readUInt32LE(12);
      if (length > this.maxMessage) throw new ProtocolError(`the daemon sent a ${length}-byte payload`);
      if (queue.length < wire.HEADER_SIZE + length) return null;
      queue.take(wire.HEADER_SIZE);
      const payload = Buffer.from(queue.take(length));
      const message = wire.mcp1Parse(header[5], header.readUInt16LE(6), header.readUInt32LE(8), payload);
      if (message) return message;
    }
  }

  _dispatch(message, socket) {
    switch (message.kind) {
      case 'response':
      case 'error': {
        if (message.error && CLOSING_CODES.has(message.error.code)) this._fatal = message.error;
        let waiter = message.id !== null && message.id !== undefined ? this._pending.get(message.id) : undefined;
        if (!waiter && (message.id === null || message.id === undefined) && message.error) {
          // A JSON-RPC error no request can be named in: a whole batch
          // refused, or the connection's own (then it closes).
          if (!CLOSING_CODES.has(message.error.code) && this._batches.size) {
            waiter = this._batches.values().next().value;
          } else {
            this._fatal = message.error;
          }
        } else if (!waiter && this._batchOf.has(message.id)) {
          waiter = this._batches.get(this._batchOf.get(message.id));
        }
        waiter?.resolve(message);
        break;
      }
      case 'batch': {
        const first = message.value.map((answer) => this._batchOf.get(answer.id)).find((id) => id !== undefined);
        if (first !== undefined) this._batches.get(first)?.resolve(message);
        break;
      }
      case 'request':
        this._onCall(message, socket);
        break;
      case 'notification':
        if (message.method === wire.EVENT_METHOD) this._onEvent(message.value);
        else this._onCall(message, socket);
        break;
      case 'cancel':
        this._onCancel(message.id, message.value);
        break;
      default:
        break;
    }
  }

  // Hooks for what the daemon sends on its own (Client serves them).

  /** A call or notification the bus forwards to this connection. */
  _onCall(_message, _socket) {}

  /** The params of a bus.event. */
  _onEvent(_params) {}

  /** A forwarded call that will not be answered to anyone. */
  _onCancel(_id, _reason) {}

  /** The connection is gone: what ran for it stops. */
  _onLost(_failure) {}

  /** The client is closed for good. */
  _onClose() {}

  _drop(socket, error) {
    if (socket !== this._socket) return;
    this._socket = null;
    const wasConnected = this._connected;
    this._connected = false;
    socket.destroy();
    let failure;
    if (this._fatal) failure = this._fatal;
    else if (error instanceof JunctionError) failure = error;
    else failure = new ConnectionLost(`connection to ${this.address} lost${error ? `: ${error.message}` : ''}`);
    for (const waiter of [...this._pending.values(), ...this._batches.values()]) waiter.reject(failure);
    this._pending.clear();
    this._batches.clear();
    this._batchOf.clear();
    this._onLost(failure);
    if (wasConnected) this.emit('disconnect', failure);
    if (wasConnected && this.reconnect && !this._closed) {
      this._reconnecting = this._reconnectLoop().finally(() => { this._reconnecting = null; });
    }
  }

  // --- writing --------------------------------------------------------------

  _newId() {
    for (;;) {
      const id = this._nextId;
      this._nextId = id >= wire.MAX_ID ? 1 : id + 1;
      if (!this._pending.has(id) && !this._batchOf.has(id)) return id;
    }
  }

  /** The connection, waiting for a reconnect in progress until `deadline`. */
  async _ready(deadline) {
    for (;;) {
      if (this._closed) throw new ConnectionLost('the client is closed');
      if (this._socket && this.connected) return this._socket;
      if (!this._reconnecting) {
        if (this._fatal) throw new ConnectionLost(`the daemon is closing the connection: ${this._fatal.message}`);
        throw new ConnectionLost(`not connected to ${this.address}`);
      }
      const left = deadline === null ? null : deadline - Date.now();
      if (left !== null && left <= 0) throw new ConnectionLost(`not connected to ${this.address} (reconnecting)`);
      await this._nextConnect(left);
    }
  }

  _encodeCall(method, params, id) {
    if (this.protocol === 'mcp1') {
      return id === null
        ? wire.mcp1Call(wire.NOTIFICATION, 0, method, params)
        : wire.mcp1Call(wire.REQUEST, id, method, params);
    }
    return wire.jsonrpcLine(wire.jsonrpcRequest(method, params, id));
  }

  _write(socket, data) {
    if (socket.destroyed) throw new ConnectionLost(`connection to ${this.address} lost`);
    socket.write(data);
  }

  async _request(method, params, timeoutMs, ready = true) {
    const deadline = timeoutMs === null ? null : Date.now() + timeoutMs;
    let socket;
    if (ready) socket = await this._ready(deadline);
    else if (!this._socket) throw new ConnectionLost(`connection to ${this.address} lost`);
    else socket = this._socket;
    const id = this._newId();
    const data = this._encodeCall(method, params, id);
    const answer = await new Promise((resolve, reject) => {
      let timer = null;
      const done = () => {
        if (timer) clearTimeout(timer);
        this._pending.delete(id);
      };
      this._pending.set(id, {
        resolve: (value) => { done(); resolve(value); },
        reject: (error) => { done(); reject(error); },
      });
      if (deadline !== null) {
        timer = setTimeout(() => {
          done();
          reject(new CallTimeout(`no answer to ${method} within ${timeoutMs} ms`));
        }, Math.max(0, deadline - Date.now()));
      }
      try {
        this._write(socket, data);
      } catch (e) {
        done();
        reject(e);
      }
    });
    if (answer.error) throw answer.error;
    return answer.value;
  }

  // --- calls ------------------------------------------------------------------

  /**
   * Calls `method`: resolves to its result (a Buffer when the answer is a raw
   * MCP1 body), rejects with the RpcError it answered, CallTimeout or ConnectionLost.
   */
  call(method, params, options = {}) {
    return this._request(method, params, options.timeout === undefined ? this.timeout : options.timeout);
  }

  /** Sends a notification: the method runs, nothing comes back. */
  async notify(method, params) {
    const socket = await this._ready(this.timeout === null ? null : Date.now() + this.timeout);
    this._write(socket, this._encodeCall(method, params, null));
  }

  /** `rpc.ping`: "pong". */
  ping() {
    return this.call('rpc.ping');
  }

  /**
   * Several calls at once: entries are method names, `[method, params]`, or
   * `notification(method, params)`. Resolves to one item per entry, in order:
   * the result, the RpcError (not thrown) of a call that failed, or undefined
   * for a notification. One batch line over JSON-RPC; pipelined over MCP1.
   */
  async batch(entries, options = {}) {
    const timeoutMs = options.timeout === undefined ? this.timeout : options.timeout;
    const calls = entries.map((entry) => {
      if (typeof entry === 'string') return { method: entry, params: undefined, notification: false };
      if (Array.isArray(entry)) return { method: entry[0], params: entry[1], notification: false };
      return { method: entry.method, params: entry.params, notification: Boolean(entry.notification) };
    });
    if (!calls.length) return [];
    if (this.protocol === 'mcp1') {
      return Promise.all(calls.map(async (c) => {
        if (c.notification) return this.notify(c.method, c.params);
        try {
          return await this._request(c.method, c.params, timeoutMs);
        } catch (e) {
          if (e instanceof RpcError) return e;
          throw e;
        }
      }));
    }
    const deadline = timeoutMs === null ? null : Date.now() + timeoutMs;
    const socket = await this._ready(deadline);
    const ids = calls.map((c) => (c.notification ? null : this._newId()));
    const objects = calls.map((c, i) => wire.jsonrpcRequest(c.method, c.params, ids[i]));
    const wanted = ids.filter((id) => id !== null);
    if (!wanted.length) {
      this._write(socket, wire.jsonrpcLine(objects));
      return calls.map(() => undefined);
    }
    const first = wanted[0];
    const answer = await new Promise((resolve, reject) => {
      let timer = null;
      const done = () => {
        if (timer) clearTimeout(timer);
        this._batches.delete(first);
        for (const id of wanted) this._batchOf.delete(id);
      };
      this._batches.set(first, {
        resolve: (value) => { done(); resolve(value); },
        reject: (error) => { done(); reject(error); },
      });
      for (const id of wanted) this._batchOf.set(id, first);
      if (deadline !== null) {
        timer = setTimeout(() => {
          done();
          reject(new CallTimeout(`no answer to a batch of ${calls.length} within ${timeoutMs} ms`));
        }, Math.max(0, deadline - Date.now()));
      }
      try {
        this._write(socket, wire.jsonrpcLine(objects));
      } catch (e) {
        done();
        reject(e);
      }
    });
    if (answer.kind !== 'batch') throw answer.error ?? new ProtocolError('unexpected answer to a batch');
    const byId = new Map(answer.value.map((a) => [a.id, a]));
    return ids.map((id) => {
      if (id === null) return undefined;
      const a = byId.get(id);
      if (!a) return new ProtocolError(`the batch's answer lacks id ${id}`);
      return a.error ?? a.value;
    });
  }
}
