// junctiond's service bus on a Connection: Client serves the methods it
// provides (handlers get an AbortSignal the daemon's cancel aborts) and hands
// events to the subscriptions whose topic or pattern matches; after a
// reconnect it registers its names and subscribes its topics again.

import { EventEmitter } from 'node:events';

import { Connection } from './connection.js';
import { CallTimeout, ConnectionLost, RpcError } from './errors.js';
import * as wire from './wire.js';

export { DEFAULT_MAX_MESSAGE, DEFAULT_TIMEOUT, notification } from './connection.js';

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
 * A connection to junctiond with the service bus; make one with `connect(options)`.
 * Events: 'disconnect' (error), 'reconnect' (count), 'restoreError' (error, name or topic).
 */
export class Client extends Connection {
  constructor(options = {}) {
    super(options);
    this.restoreErrors = [];
    this._provided = new Map(); // name or pattern -> handler
    this._subscriptions = [];
    this._running = new Map(); // forwarded id -> AbortController
  }

  async _restore() {
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

  _onCall(message, socket) {
    this._serve(message, socket);
  }

  _onEvent(params) {
    if (!params || typeof params !== 'object' || typeof params.topic !== 'string') return;
    const event = { topic: params.topic, data: params.data ?? null, dropped: params.dropped ?? 0 };
    for (const sub of [...this._subscriptions]) if (sub.wants(event.topic)) sub._deliver(event);
  }

  _onCancel(id, reason) {
    const controller = this._running.get(id);
    this._running.delete(id);
    controller?.abort(new ConnectionLost(`the daemon cancelled the call: ${reason}`));
  }

  _onLost(failure) {
    for (const controller of this._running.values()) controller.abort(failure);
    this._running.clear();
  }

  _onClose() {
    for (const sub of this._subscriptions) sub._end();
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
