// One connection to junctiond, in JSON-RPC 2.0 or MCP1, over its Unix socket
// or TCP, with promises.
//
// What the daemon sends is decoded as it arrives and handed out: answers to
// the calls waiting for them (matched by id), calls the bus forwards to the
// methods this client provides (their handlers get an AbortSignal the
// daemon's cancel aborts), and events to the subscriptions whose topic or
// pattern matches. When the connection is lost, waiting calls fail with
// ConnectionLost; unless `reconnect: false`, the client then connects again
// with exponential backoff, authenticates again (reading the token file
// afresh: the daemon makes a new token at each start), registers its names
// and subscribes its topics again.

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
/** Events a subscription keeps queued before dropping the oldest. */
export const DEFAULT_QUEUE = 10_000;

/** A name or topic against an exact name or a `prefix.*` pattern. */
export function matches(pattern, topic) {
  if (pattern.endsWith('.*')) {
    const prefix = pattern.slice(0, -1);
    return topic.startsWith(prefix) && topic.length > prefix.length;
  }
  return pattern === topic;
}

const asList = (names) => (typeof names === 'string' ? [names] : [...names]);

/** A batch entry that is a notification (no answer). */
export function notification(method, params) {
  return { method, params, notification: true };
}

/**
 * Topics and patterns a client subscribes to, and the events on them: an
 * async iterator, `next(timeoutMs)`, or the callback given to subscribe().
 * Without a callback at most `maxsize` events wait; past that the oldest is
 * dropped and counted in `dropped`.
 */
export class Subscription extends EventEmitter {
  constructor(client, topics, callback, maxsize) {
    super();
    this.client = client;
    this.topics = Object.freeze([...topics]);
    this.dropped = 0;
    this.active = true;
    this._callback = callback;
    this._queue = [];
    this._maxsize = Math.max(1, maxsize);
    this._waiters = [];
  }

  wants(topic) {
    return this.active && this.topics.some((pattern) => matches(pattern, topic));
  }

  _deliver(event) {
    this.emit('event', event);
    if (this._callback) {
      try {
        const outcome = this._callback(event);
        if (outcome && typeof outcome.catch === 'function') outcome.catch(() => {});
      } catch {
        // a callback's bug must not stop the reader
      }
      return;
    }
    const waiter = this._waiters.shift();
    if (waiter) {
      waiter.resolve(event);
      return;
    }
    if (this._queue.length >= this._maxsize) {
      this._queue.shift();
      this.dropped += 1;
    }
    this._queue.push(event);
  }

  _end() {
    this.active = false;
    for (const waiter of this._waiters.splice(0)) waiter.reject(new ConnectionLost('the subscription ended'));
  }

  /** The next event; rejects with CallTimeout after `timeoutMs`. */
  next(timeoutMs) {
    if (this._queue.length) return Promise.resolve(this._queue.shift());
    if (!this.active) return Promise.reject(new ConnectionLost('the subscription ended'));
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      if (timeoutMs !== undefined && timeoutMs !== null) {
        const timer = setTimeout(() => {
          const at = this._waiters.indexOf(waiter);
          if (at >= 0) this._waiters.splice(at, 1);
          reject(new CallTimeout(`no event on ${this.topics.join(', ')} within ${timeoutMs} ms`));
        }, timeoutMs);
        waiter.resolve = (event) => { clearTimeout(timer); resolve(event); };
        waiter.reject = (error) => { clearTimeout(timer); reject(error); };
      }
      this._waiters.push(waiter);
    });
  }

  async *[Symbol.asyncIterator]() {
    for (;;) {
      let event;
      try {
        event = await this.next();
      } catch (e) {
        if (e instanceof ConnectionLost) return;
        throw e;
      }
      yield event;
    }
  }

  /** Stops receiving these events (topics no other subscription holds are unsubscribed). */
  unsubscribe() {
    return this.client.unsubscribe(this);
  }
}

/**
 * A connection to junctiond; make one with `connect(options)`.
 * Events: 'disconnect' (error), 'reconnect' (count), 'restoreError' (error).
 */
export class Client extends EventEmitter {
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
    this.restoreErrors = [];
    this._token = options.token ?? null;
    this._tokenFile = options.tokenFile || process.env.JUNCTION_AUTH_TOKEN_FILE || null;
    this._auth = options.auth ?? true;
    this._nextId = 1;
    this._socket = null;
    this._connected = false;
    this._closed = false;
    this._fatal = null;
    this._pending = new Map(); // id -> {resolve, reject}
    this._batches = new Map(); // first id -> {resolve, reject}
    this._batchOf = new Map(); // id -> first id of its batch
    this._provided = new Map(); // name or pattern -> handler
    this._subscriptions = [];
    this._running = new Map(); // forwarded id -> AbortController
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
      if (this.tcp && this._auth) {
        const secret = this._secret();
        if (secret !== null) await this._request('rpc.auth', { token: secret }, this.timeout, false);
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

  async _restore() {
    this.restoreErrors = [];
    const keep = async (method, params, what) => {
      try {
        await this._request(method, params, this.timeout, false);
      } catch (e) {
        if (!(e instanceof RpcError)) throw e;
        this.restoreErrors.push(e);
        this.emit('restoreError', e, what);
      }
    };
    for (const name of [...this._provided.keys()]) await keep('bus.register', { names: [name] }, name);
    for (const topic of this._topics()) await keep('bus.subscribe', { topics: [topic] }, topic);
  }

  _topics() {
    return [...new Set(this._subscriptions.flatMap((sub) => sub.topics))];
  }

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
    for (const sub of this._subscriptions) sub._end();
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
        this._serve(message, socket);
        break;
      case 'notification':
        if (message.method === wire.EVENT_METHOD) this._event(message.value);
        else this._serve(message, socket);
        break;
      case 'cancel': {
        const controller = this._running.get(message.id);
        this._running.delete(message.id);
        controller?.abort(new ConnectionLost(`the daemon cancelled the call: ${message.value}`));
        break;
      }
      default:
        break;
    }
  }

  _event(params) {
    if (!params || typeof params !== 'object' || typeof params.topic !== 'string') return;
    const event = { topic: params.topic, data: params.data ?? null, dropped: params.dropped ?? 0 };
    for (const sub of [...this._subscriptions]) if (sub.wants(event.topic)) sub._deliver(event);
  }

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
    for (const controller of this._running.values()) controller.abort(failure);
    this._running.clear();
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

  // --- the bus: providing -------------------------------------------------------

  /**
   * Registers names or `prefix.*` patterns (bus.register, all or nothing) and
   * serves the calls routed to them with `handler(call)`; registered again
   * after a reconnect. Resolves to the names now provided.
   */
  async provide(names, handler) {
    names = asList(names);
    const before = new Map(names.map((name) => [name, this._provided.get(name)]));
    for (const name of names) this._provided.set(name, handler);
    try {
      const result = await this.call('bus.register', { names });
      return result?.names ?? names;
    } catch (e) {
      for (const [name, old] of before) {
        if (old === undefined) this._provided.delete(name);
        else this._provided.set(name, old);
      }
      throw e;
    }
  }

  /** Releases names or patterns (bus.unregister); resolves to those released. */
  async unprovide(names) {
    names = asList(names);
    for (const name of names) this._provided.delete(name);
    const result = await this.call('bus.unregister', { names });
    return result?.names ?? [];
  }

  _handlerFor(method) {
    if (this._provided.has(method)) return this._provided.get(method);
    let best = null;
    for (const pattern of this._provided.keys()) {
      if (pattern.endsWith('.*') && matches(pattern, method) && (best === null || pattern.length > best.length)) best = pattern;
    }
    return best === null ? null : this._provided.get(best);
  }

  async _serve(message, socket) {
    const controller = new AbortController();
    const isCall = message.kind === 'request';
    if (isCall) this._running.set(message.id, controller);
    const call = {
      method: message.method,
      params: message.value,
      id: isCall ? message.id : null,
      raw: Boolean(message.raw),
      signal: controller.signal,
    };
    let reply;
    try {
      const handler = this._handlerFor(call.method);
      if (!handler) throw RpcError.from(-32601, `Method not found: ${JSON.stringify(call.method)} is not provided here`);
      reply = this._encodeResult(call.id, await handler(call));
    } catch (e) {
      const error = e instanceof RpcError ? e : RpcError.from(-32603, `Internal error: ${e?.name ?? 'Error'}: ${e?.message ?? e}`);
      reply = this._encodeError(call.id, error);
    } finally {
      if (isCall) this._running.delete(message.id);
    }
    if (!isCall || controller.signal.aborted || socket !== this._socket || socket.destroyed) return;
    socket.write(reply);
  }

  _encodeResult(id, result) {
    try {
      if (this.protocol === 'mcp1') return wire.mcp1Response(id, result);
      if (wire.isBytes(result)) {
        return this._encodeError(id, RpcError.from(-32603, 'Internal error: the handler returned bytes, which JSON-RPC cannot carry'));
      }
      return wire.jsonrpcResult(id, result);
    } catch (e) {
      return this._encodeError(id, RpcError.from(-32603, `Internal error: the result is not JSON: ${e.message}`));
    }
  }

  _encodeError(id, error) {
    let plain = error;
    try {
      if (error.data !== undefined) wire.dumps(error.data);
    } catch {
      plain = new RpcError(error.code, error.message);
    }
    return this.protocol === 'mcp1' ? wire.mcp1Error(id, plain) : wire.jsonrpcError(id, plain);
  }

  // --- the bus: events ----------------------------------------------------------

  /**
   * Subscribes to topics or `prefix.*` patterns (bus.subscribe); resolves to
   * the Subscription the events go to. Subscribed again after a reconnect.
   */
  async subscribe(topics, callback, options = {}) {
    if (callback && typeof callback === 'object') {
      options = callback;
      callback = undefined;
    }
    topics = asList(topics);
    const held = new Set(this._topics());
    const sub = new Subscription(this, topics, callback, options.maxsize ?? DEFAULT_QUEUE);
    const added = [...new Set(topics)].filter((topic) => !held.has(topic));
    this._subscriptions.push(sub); // before the answer: no event is missed
    if (added.length) {
      try {
        await this.call('bus.subscribe', { topics: added });
      } catch (e) {
        this._subscriptions.splice(this._subscriptions.indexOf(sub), 1);
        throw e;
      }
    }
    return sub;
  }

  /** Ends a subscription; topics no other subscription holds are unsubscribed. */
  async unsubscribe(subscription) {
    const at = this._subscriptions.indexOf(subscription);
    if (at >= 0) this._subscriptions.splice(at, 1);
    subscription._end();
    const still = new Set(this._topics());
    const gone = [...new Set(subscription.topics)].filter((topic) => !still.has(topic));
    if (gone.length && this.connected) await this.call('bus.unsubscribe', { topics: gone });
  }

  /** Publishes an event; resolves to how many subscribers will get it. */
  async publish(topic, data = null) {
    const result = await this.call('bus.publish', { topic, data });
    return result?.subscribers ?? 0;
  }

  /** bus.list: the names provided and the topics subscribed. */
  busList() {
    return this.call('bus.list');
  }
}

/** A connected Client (see the README for the options). */
export function connect(options = {}) {
  return new Client(options).open();
}
