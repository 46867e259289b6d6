//! What a call carries and what a handler answers: the params borrowed
//! from the frame, and the result written straight into the response frame.
//! Both protocols' encoders (`jsonrpc::write_response`,
//! `mcp1::write_response`) wrap a [`Reply`] in their framing.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::error::RpcError;

/// The params of a call, borrowed from the frame they arrived in.
#[derive(Debug, Clone, Copy)]
pub enum Params<'a> {
    /// The request carried no params.
    None,
    /// JSON params (an array or object for JSON-RPC).
    Json(&'a RawValue),
    /// Raw bytes (MCP1 raw bodies).
    Raw(&'a [u8]),
}

impl<'a> Params<'a> {
    /// Deserializes JSON params into `T`; absent params deserialize from `null`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, RpcError> {
        let text = match self {
            Params::None => "null",
            Params::Json(raw) => raw.get(),
            Params::Raw(_) => {
                return Err(RpcError::invalid_params(
                    "this method takes JSON params, not raw bytes",
                ));
            }
        };
        serde_json::from_str(text).map_err(RpcError::invalid_params)
    }
}

/// The result a handler writes; it lands directly in the response frame.
pub struct Reply<'a> {
    buf: &'a mut Vec<u8>,
    start: usize,
    raw: bool,
    /// The result is a constant known to hold no line break, so a JSON-RPC
    /// answer need not search it for one.
    one_line: bool,
}

impl<'a> Reply<'a> {
    /// A reply appending to `buf`.
    #[inline]
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        let start = buf.len();
        Self {
            buf,
            start,
            raw: false,
            one_line: false,
        }
    }

    #[inline]
    fn reset(&mut self) {
        self.buf.truncate(self.start);
        self.raw = false;
        self.one_line = false;
    }

    /// Sets the result to `value`, serialized as JSON.
    pub fn json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), RpcError> {
        self.reset();
        serde_json::to_writer(&mut *self.buf, value).map_err(|e| {
            self.reset();
            RpcError::internal(format_args!("result did not serialize: {e}"))
        })
    }

    /// Sets the result to JSON text that is already valid.
    #[inline]
    pub fn json_text(&mut self, raw: &RawValue) {
        self.reset();
        self.buf.extend_from_slice(raw.get().as_bytes());
    }

    /// Sets the result to a constant JSON text (a string without escapes,
    /// a number): copied as it is, with none of serde's escaping work. The
    /// caller vouches that it is one valid JSON value.
    #[inline]
    pub fn json_static(&mut self, json: &'static str) {
        debug_assert!(serde_json::from_str::<&RawValue>(json).is_ok(), "{json}");
        debug_assert!(!json.contains(['\n', '\r']), "{json:?} holds a line break");
        self.reset();
        self.buf.extend_from_slice(json.as_bytes());
        self.one_line = true;
    }

    /// Sets the result to raw bytes (carried by MCP1 only).
    #[inline]
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.reset();
        self.raw = true;
        self.buf.extend_from_slice(bytes);
    }

    /// True when the handler set no result.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.buf.len() == self.start
    }

    /// True when the result is raw bytes rather than JSON.
    #[inline]
    pub fn is_raw(&self) -> bool {
        self.raw
    }

    /// True when the result is a constant of [`Reply::json_static`], which
    /// holds no line break.
    #[inline]
    pub fn is_one_line(&self) -> bool {
        self.one_line
    }

    /// The result bytes written so far.
    #[inline]
    pub fn written(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Discards whatever the handler wrote (used when it failed).
    #[inline]
    pub fn discard(&mut self) {
        self.reset();
    }
}
