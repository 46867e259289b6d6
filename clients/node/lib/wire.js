// The two wire formats, without I/O: JSON-RPC 2.0 lines (proto/jsonrpc.md) and
// MCP1 frames (proto/mcp1.md), and one shape for what the daemon sends in
// either: {kind, id, method, value, raw, error}, kind one of 'response',
// 'error', 'request' (a call the bus forwards), 'notification', 'cancel',
// 'batch' (value: the list of answers) or 'refusal' (a JSON-RPC error line
// where an MCP1 frame was expected: the daemon refused the connection).

import { ProtocolError, RpcError, errorFromObject } from './errors.js';

export const MAGIC = Buffer.from('MCP1');
export const HEADER_SIZE = 16;
export const REQUEST = 1;
export const RESPONSE = 2;
export const NOTIFICATION = 3;
export const ERROR = 4;
export const CANCEL = 5;
export const PING = 6;
export const PONG = 7;
export const FLAG_RAW = 0x0001;
export const MAX_ID = 0xffffffff;
export const EVENT_METHOD = 'bus.event';
export const CANCEL_METHOD = 'bus.cancel';

export function isBytes(value) {
  return value instanceof Uint8Array;
}

/** Compact JSON; refuses what JSON cannot hold. */
export function dumps(value) {
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError(`not JSON: ${String(value)}`);
  return text;
}

// --- JSON-RPC ---------------------------------------------------------------

export function jsonrpcRequest(method, params, id) {
  const obj = { jsonrpc: '2.0', method };
  if (params !== undefined && params !== null) {
    if (typeof params !== 'object' || isBytes(params)) {
      throw new TypeError('JSON-RPC params must be an array or an object (raw bytes and other values need MCP1)');
    }
    obj.params = params;
  }
  if (id !== undefined && id !== null) obj.id = id;
  return obj;
}

export function jsonrpcLine(obj) {
  return Buffer.from(`${dumps(obj)}\n`, 'utf8');
}

export function jsonrpcResult(id, result) {
  return jsonrpcLine({ jsonrpc: '2.0', result: result === undefined ? null : result, id });
}

export function jsonrpcError(id, error) {
  const obj = { code: error.code, message: error.message };
  if (error.data !== undefined && error.data !== null) obj.data = error.data;
  return jsonrpcLine({ jsonrpc: '2.0', error: obj, id });
}

function jsonrpcOne(obj) {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new ProtocolError(`the daemon sent a JSON value that is no message: ${JSON.stringify(obj).slice(0, 200)}`);
  }
  if (typeof obj.method === 'string') {
    if (obj.method === CANCEL_METHOD && !('id' in obj)) {
      const params = obj.params ?? {};
      return { kind: 'cancel', id: params.id, value: params.reason };
    }
    if ('id' in obj) return { kind: 'request', id: obj.id, method: obj.method, value: obj.params ?? null, raw: false };
    return { kind: 'notification', method: obj.method, value: obj.params ?? null, raw: false };
  }
  if ('error' in obj) {
    const error = errorFromObject(obj.error);
    if (!error) throw new ProtocolError(`malformed error object from the daemon: ${JSON.stringify(obj).slice(0, 200)}`);
    return { kind: 'error', id: obj.id ?? null, error };
  }
  if ('result' in obj) return { kind: 'response', id: obj.id ?? null, value: obj.result };
  throw new ProtocolError(`the daemon sent an object that is no message: ${JSON.stringify(obj).slice(0, 200)}`);
}

export function jsonrpcParse(line) {
  let value;
  try {
    value = JSON.parse(line.toString('utf8'));
  } catch (e) {
    throw new ProtocolError(`the daemon sent a line that is not JSON (${e.message}): ${line.subarray(0, 200)}`);
  }
  if (Array.isArray(value)) return { kind: 'batch', value: value.map(jsonrpcOne) };
  return jsonrpcOne(value);
}

// --- MCP1 -------------------------------------------------------------------

export function mcp1Frame(kind, id, payload = Buffer.alloc(0), flags = 0) {
  const header = Buffer.alloc(HEADER_SIZE);
  MAGIC.copy(header, 0);
  header.writeUInt8(1, 4);
  header.writeUInt8(kind, 5);
  header.writeUInt16LE(flags, 6);
  header.writeUInt32LE(id, 8);
  header.writeUInt32LE(payload.length, 12);
  return Buffer.concat([header, payload]);
}

/** A body and its flags: bytes go raw (RAW set), anything else as JSON (undefined/null: empty). */
export function mcp1Body(params) {
  if (isBytes(params)) return [Buffer.from(params.buffer, params.byteOffset, params.byteLength), FLAG_RAW];
  if (params === undefined || params === null) return [Buffer.alloc(0), 0];
  return [Buffer.from(dumps(params), 'utf8'), 0];
}

export function mcp1Call(kind, id, method, params) {
  const name = Buffer.from(method, 'utf8');
  if (name.length < 1 || name.length > 255) {
    throw new RangeError(`a method name is 1 to 255 bytes of UTF-8, got ${name.length}`);
  }
  const [body, flags] = mcp1Body(params);
  const length = Buffer.alloc(2);
  length.writeUInt16LE(name.length, 0);
  return mcp1Frame(kind, id, Buffer.concat([length, name, body]), flags);
}

export function mcp1Response(id, result) {
  const [body, flags] = mcp1Body(result === undefined ? null : result);
  return mcp1Frame(RESPONSE, id, body.length ? body : Buffer.from('null'), flags);
}

export function mcp1Error(id, error) {
  let message = Buffer.from(String(error.message), 'utf8');
  if (message.length > 0xffff) message = Buffer.from(message.subarray(0, 0xffff).toString('utf8').replace(/\uFFFD$/, ''), 'utf8');
  const head = Buffer.alloc(6);
  head.writeInt32LE(error.code, 0);
  head.writeUInt16LE(message.length, 4);
  const data = error.data === undefined || error.data === null ? Buffer.alloc(0) : Buffer.from(dumps(error.data), 'utf8');
  return mcp1Frame(ERROR, id, Buffer.concat([head, message, data]));
}

function decodeBody(body, flags) {
  if (flags & FLAG_RAW) return body;
  const text = body.toString('utf8');
  if (!text.trim()) return null;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ProtocolError(`the daemon sent a body that is not JSON (${e.message})`);
  }
}

export function parseErrorPayload(payload) {
  if (payload.length < 6) throw new ProtocolError('malformed ERROR frame from the daemon');
  const code = payload.readInt32LE(0);
  const length = payload.readUInt16LE(4);
  if (6 + length > payload.length) throw new ProtocolError('malformed ERROR frame from the daemon');
  const message = payload.subarray(6, 6 + length).toString('utf8');
  const rest = payload.subarray(6 + length).toString('utf8');
  let data;
  if (rest.trim()) {
    try {
      data = JSON.parse(rest);
    } catch {
      data = undefined; // as the daemon does: data that is not JSON is left out
    }
  }
  return RpcError.from(code, message, data);
}

/** One frame from the daemon; null for kinds a client ignores (PONG). */
export function mcp1Parse(kind, flags, id, payload) {
  const raw = Boolean(flags & FLAG_RAW);
  switch (kind) {
    case RESPONSE:
      try {
        return { kind: 'response', id, value: decodeBody(payload, flags), raw };
      } catch (e) {
        return { kind: 'error', id, error: RpcError.from(-32603, e.message) };
      }
    case ERROR:
      return { kind: 'error', id, error: parseErrorPayload(payload) };
    case REQUEST:
    case NOTIFICATION: {
      if (payload.length < 2) throw new ProtocolError('a call frame from the daemon without its method');
      const length = payload.readUInt16LE(0);
      const method = payload.subarray(2, 2 + length).toString('utf8');
      const value = decodeBody(payload.subarray(2 + length), flags);
      return kind === REQUEST
        ? { kind: 'request', id, method, value, raw }
        : { kind: 'notification', method, value, raw };
    }
    case CANCEL: {
      const reason = decodeBody(payload, 0);
      return { kind: 'cancel', id, value: reason && typeof reason === 'object' ? reason.reason : undefined };
    }
    default:
      return null;
  }
}

/** The JSON-RPC error line a daemon sends at accept, read where a frame was expected. */
export function refusal(text) {
  try {
    const obj = JSON.parse(text.toString('utf8'));
    return obj && typeof obj === 'object' ? errorFromObject(obj.error) : null;
  } catch {
    return null;
  }
}

/**
 * Bytes received and not yet decoded, as a list of chunks, so that a long
 * message arriving in many reads is copied once, when it is complete.
 */
export class ByteQueue {
  constructor() {
    this.chunks = [];
    this.length = 0;
    this.scanned = 0; // bytes already searched for a line end
  }

  push(chunk) {
    if (chunk.length) {
      this.chunks.push(chunk);
      this.length += chunk.length;
    }
  }

  /** The offset of the first `byte` at or after `this.scanned`, or -1 (then all is scanned). */
  indexOf(byte) {
    let base = 0;
    for (const chunk of this.chunks) {
      if (base + chunk.length > this.scanned) {
        const from = Math.max(0, this.scanned - base);
        const at = chunk.indexOf(byte, from);
        if (at >= 0) return base + at;
      }
      base += chunk.length;
    }
    this.scanned = this.length;
    return -1;
  }

  /** The first `n` bytes, removed. */
  take(n) {
    this.scanned = 0;
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0];
    if (first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.length -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let offset = 0;
    while (offset < n) {
      const chunk = this.chunks[0];
      const k = Math.min(chunk.length, n - offset);
      chunk.copy(out, offset, 0, k);
      offset += k;
      if (k === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(k);
    }
    this.length -= n;
    return out;
  }

  /** The first `n` bytes, left in place. */
  peek(n) {
    if (this.chunks.length && this.chunks[0].length >= n) return this.chunks[0].subarray(0, n);
    const out = Buffer.allocUnsafe(Math.min(n, this.length));
    let offset = 0;
    for (const chunk of this.chunks) {
      if (offset >= out.length) break;
      offset += chunk.copy(out, offset, 0, Math.min(chunk.length, out.length - offset));
    }
    return out;
  }
}
