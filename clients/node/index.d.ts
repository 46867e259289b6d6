// Types of junction-client, written by hand; test/types.test.js checks that
// every name declared here exists in the package, and test/types-check.mts is
// compiled against this file with tsc --strict.

import { EventEmitter } from 'node:events';

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Params or a result: JSON, or raw bytes (MCP1 only). */
export type Body = Json | Uint8Array | undefined;

export interface ConnectOptions {
  /** The Unix socket [default: JUNCTION_UNIX, else defaultSocketPath()]; with `tcp`, only where the token is. */
  unix?: string;
  /** `HOST:PORT`: connect over TCP (wins over `unix`). */
  tcp?: string | null;
  /** 'jsonrpc' (default, or JUNCTION_PROTO) or 'mcp1'. */
  protocol?: 'jsonrpc' | 'mcp1';
  /** The secret sent with rpc.auth on TCP. */
  token?: string | null;
  /** A file holding it [default: JUNCTION_AUTH_TOKEN_FILE, else the daemon's generated token, when readable]. */
  tokenFile?: string | null;
  /** Send rpc.auth on TCP (default true). */
  auth?: boolean;
  /** Milliseconds a call waits for its answer (default 30000; null: forever). */
  timeout?: number | null;
  /** Connect again after the connection is lost (default true). */
  reconnect?: boolean;
  /** First and longest wait between reconnect attempts, in ms (default [50, 2000]). */
  backoff?: [number, number];
  /** The longest line or frame payload read from the daemon (default 64 MiB). */
  maxMessage?: number;
}

export interface CallOptions {
  /** Milliseconds to wait for the answer (null: forever). */
  timeout?: number | null;
}

/** A call the bus forwarded to a method this client provides. */
export interface Call {
  /** The name called (for a pattern, the actual name under it). */
  method: string;
  /** JSON params (null when none), or a Buffer when `raw`. */
  params: any;
  /** The daemon's id of the call; null for a notification. */
  id: number | null;
  /** True when `params` are the raw bytes of an MCP1 body. */
  raw: boolean;
  /** Aborted when the daemon cancels the call (caller gone, timeout) or the connection is lost. */
  signal: AbortSignal;
}

/** What a provided method returns: JSON, or bytes (a raw MCP1 answer). */
export type Handler = (call: Call) => Body | void | Promise<Body | void>;

/** A bus.event. */
export interface Event {
  topic: string;
  data: any;
  /** Events the daemon dropped for this connection before this one. */
  dropped: number;
}

export interface BatchNotification {
  method: string;
  params?: Body;
  notification: true;
}

export type BatchEntry = string | [string] | [string, Body] | BatchNotification;

export interface SubscribeOptions {
  /** Events kept queued before the oldest is dropped (default 10000). */
  maxsize?: number;
}

export const DEFAULT_TIMEOUT: number;
export const DEFAULT_MAX_MESSAGE: number;
export const DEFAULT_QUEUE: number;

/** A batch entry that is a notification. */
export function notification(method: string, params?: Body): BatchNotification;

/** A name or topic against an exact name or a `prefix.*` pattern. */
export function matches(pattern: string, topic: string): boolean;

export class Subscription extends EventEmitter implements AsyncIterable<Event> {
  readonly client: Client;
  readonly topics: readonly string[];
  /** Events dropped from the local queue. */
  dropped: number;
  active: boolean;
  wants(topic: string): boolean;
  /** The next event; rejects with CallTimeout after `timeoutMs`. */
  next(timeoutMs?: number | null): Promise<Event>;
  [Symbol.asyncIterator](): AsyncIterator<Event>;
  unsubscribe(): Promise<void>;
  on(event: 'event', listener: (event: Event) => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
}

export class Client extends EventEmitter {
  constructor(options?: ConnectOptions);
  readonly protocol: 'jsonrpc' | 'mcp1';
  readonly unix: string;
  readonly tcp: string | null;
  timeout: number | null;
  reconnect: boolean;
  backoff: [number, number];
  maxMessage: number;
  /** How many times this client has connected (and, after the first, restored its names and topics). */
  readonly connections: number;
  /** What could not be restored after the last reconnect. */
  readonly restoreErrors: RpcError[];
  readonly address: string;
  readonly connected: boolean;
  open(): Promise<this>;
  close(): Promise<void>;
  waitConnected(connections?: number, timeoutMs?: number): Promise<void>;
  call<T = any>(method: string, params?: Body, options?: CallOptions): Promise<T>;
  notify(method: string, params?: Body): Promise<void>;
  ping(): Promise<string>;
  batch(entries: BatchEntry[], options?: CallOptions): Promise<any[]>;
  provide(names: string | string[], handler: Handler): Promise<string[]>;
  unprovide(names: string | string[]): Promise<string[]>;
  subscribe(topics: string | string[], callback?: (event: Event) => void | Promise<void>, options?: SubscribeOptions): Promise<Subscription>;
  subscribe(topics: string | string[], options: SubscribeOptions): Promise<Subscription>;
  unsubscribe(subscription: Subscription): Promise<void>;
  publish(topic: string, data?: Json): Promise<number>;
  busList(): Promise<{ names: Array<{ name: string; provider: any; pending: number }>; topics: Array<{ topic: string; subscribers: number }> }>;
  on(event: 'disconnect', listener: (error: Error) => void): this;
  on(event: 'reconnect', listener: (connections: number) => void): this;
  on(event: 'restoreError', listener: (error: RpcError, what: string) => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
}

/** A connected Client. */
export function connect(options?: ConnectOptions): Promise<Client>;

/** The daemon's default Unix socket, as `junction socket-path` prints it. */
export function defaultSocketPath(): string;
/** The token file a client of the daemon's user can read by itself, or null. */
export function findTokenFile(tcp: string, unix?: string | null): string | null;
/** The secret in a token file. */
export function readToken(file: string): string;

export class JunctionError extends Error {}
export class ConnectionLost extends JunctionError {}
export class ProtocolError extends JunctionError {}
export class CallTimeout extends JunctionError {}

/** An error answer, as the daemon or the provider sent it; throw one from a handler to answer it. */
export class RpcError extends JunctionError {
  constructor(code: number, message: string, data?: unknown);
  code: number;
  data?: unknown;
  static from(code: number, message: string, data?: unknown): RpcError;
}

/** A class of one of the daemon's codes: `new MethodNotFound(message, data)`. */
export interface RpcErrorClass {
  new (message: string, data?: unknown): RpcError;
  readonly code: number;
  prototype: RpcError;
}

export const ParseError: RpcErrorClass;
export const InvalidRequest: RpcErrorClass;
export const MethodNotFound: RpcErrorClass;
export const InvalidParams: RpcErrorClass;
export const InternalError: RpcErrorClass;
export const ServerBusy: RpcErrorClass;
export const FrameTooLarge: RpcErrorClass;
export const TooManyConnections: RpcErrorClass;
export const UnsupportedEncoding: RpcErrorClass;
export const FrameTimeout: RpcErrorClass;
export const OutOfFileDescriptors: RpcErrorClass;
export const AccessDenied: RpcErrorClass;
export const Unauthorized: RpcErrorClass;
export const Forbidden: RpcErrorClass;
export const BadMagic: RpcErrorClass;
export const UnsupportedVersion: RpcErrorClass;
export const ReservedBits: RpcErrorClass;
export const UnknownKind: RpcErrorClass;
export const TruncatedFrame: RpcErrorClass;
export const NameTaken: RpcErrorClass;
export const NotPermitted: RpcErrorClass;
export const ProviderGone: RpcErrorClass;
export const ProviderTimeout: RpcErrorClass;
export const SubscriberTooSlow: RpcErrorClass;
export const LimitReached: RpcErrorClass;

/** Code -> class, for the codes the daemon itself sends. */
export const ERROR_CLASSES: Map<number, RpcErrorClass>;
/** Codes after which the daemon closes the connection. */
export const CLOSING_CODES: Set<number>;
/** A JSON-RPC error member as an RpcError; null when malformed. */
export function errorFromObject(obj: unknown): RpcError | null;
