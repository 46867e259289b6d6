// The errors of the client: one class per daemon error code, so callers can
// test `err instanceof MethodNotFound` rather than compare numbers.

/** Base of every error this package throws. */
export class JunctionError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The connection is closed (or could not be made): a pending call may or may not have run. */
export class ConnectionLost extends JunctionError {}

/** The daemon sent bytes this client cannot read as its protocol. */
export class ProtocolError extends JunctionError {}

/** No answer within the call's timeout (the call may still run). */
export class CallTimeout extends JunctionError {}

/**
 * An error answer: `code`, `message` and `data` (undefined when absent), as the
 * daemon or the method's provider sent them. Throw one from a provided method
 * to answer that error.
 */
export class RpcError extends JunctionError {
  constructor(code, message, data) {
    super(message);
    this.code = code;
    if (data !== undefined && data !== null) this.data = data;
  }

  /** The error of `code`'s own class (RpcError for methods' own codes). */
  static from(code, message, data) {
    const cls = ERROR_CLASSES.get(code);
    return cls ? new cls(message, data) : new RpcError(code, message, data);
  }
}

function define(name, code) {
  // A named class with its code fixed: `new MethodNotFound(message, data)`.
  const cls = {
    [name]: class extends RpcError {
      constructor(message, data) {
        super(code, message, data);
      }
    },
  }[name];
  cls.code = code;
  return cls;
}

// The daemon's codes (proto/jsonrpc.md section 7, proto/mcp1.md section 5, proto/bus.md section 8).
export const ParseError = define('ParseError', -32700);
export const InvalidRequest = define('InvalidRequest', -32600);
export const MethodNotFound = define('MethodNotFound', -32601);
export const InvalidParams = define('InvalidParams', -32602);
export const InternalError = define('InternalError', -32603);
export const ServerBusy = define('ServerBusy', -32000);
export const FrameTooLarge = define('FrameTooLarge', -32001);
export const TooManyConnections = define('TooManyConnections', -32002);
export const UnsupportedEncoding = define('UnsupportedEncoding', -32003);
export const FrameTimeout = define('FrameTimeout', -32004);
export const OutOfFileDescriptors = define('OutOfFileDescriptors', -32005);
export const AccessDenied = define('AccessDenied', -32006);
export const Unauthorized = define('Unauthorized', -32007);
export const Forbidden = define('Forbidden', -32008);
export const BadMagic = define('BadMagic', -32010);
export const UnsupportedVersion = define('UnsupportedVersion', -32011);
export const ReservedBits = define('ReservedBits', -32012);
export const UnknownKind = define('UnknownKind', -32013);
export const TruncatedFrame = define('TruncatedFrame', -32014);
export const NameTaken = define('NameTaken', -32020);
export const NotPermitted = define('NotPermitted', -32021);
export const ProviderGone = define('ProviderGone', -32022);
export const ProviderTimeout = define('ProviderTimeout', -32023);
export const SubscriberTooSlow = define('SubscriberTooSlow', -32024);
export const LimitReached = define('LimitReached', -32025);

/** Code -> class, for the codes the daemon itself sends. */
export const ERROR_CLASSES = new Map(
  [
    ParseError, InvalidRequest, MethodNotFound, InvalidParams, InternalError, ServerBusy,
    FrameTooLarge, TooManyConnections, UnsupportedEncoding, FrameTimeout, OutOfFileDescriptors,
    AccessDenied, Unauthorized, Forbidden, BadMagic, UnsupportedVersion, ReservedBits, UnknownKind,
    TruncatedFrame, NameTaken, NotPermitted, ProviderGone, ProviderTimeout, SubscriberTooSlow,
    LimitReached,
  ].map((cls) => [cls.code, cls]),
);

/** Error codes after which the daemon closes the connection. */
export const CLOSING_CODES = new Set([
  -32001, -32002, -32004, -32005, -32006, -32007, -32010, -32011, -32014, -32024,
]);

/** A JSON-RPC `error` member as an RpcError; null when malformed. */
export function errorFromObject(obj) {
  if (obj === null || typeof obj !== 'object') return null;
  if (!Number.isInteger(obj.code) || typeof obj.message !== 'string') return null;
  return RpcError.from(obj.code, obj.message, obj.data);
}
