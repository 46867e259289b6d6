//! Error codes shared by both protocols, and the error a handler returns.

use std::borrow::Cow;
use std::fmt;

/// The JSON-RPC 2.0 error codes, plus Junction's server errors (-32000..-32099).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Invalid JSON was received.
    ParseError,
    /// The JSON sent is not a valid request object.
    InvalidRequest,
    /// The method does not exist.
    MethodNotFound,
    /// Invalid method parameters.
    InvalidParams,
    /// Internal error (a handler failed or panicked).
    InternalError,
    /// The daemon cannot take the request now (queue full, shutting down).
    ServerBusy,
    /// A frame exceeded the configured maximum size.
    FrameTooLarge,
    /// The connection limit was reached.
    TooManyConnections,
    /// The request's body encoding cannot be carried by the peer's protocol.
    UnsupportedEncoding,
    /// A frame took longer than the frame timeout to arrive.
    FrameTimeout,
    /// The daemon is out of file descriptors.
    OutOfDescriptors,
    /// The peer's credentials are not on the allow-list.
    AccessDenied,
    /// The connection must authenticate first, or presented a wrong token.
    Unauthorized,
    /// The policy does not let this identity do that (docs/security.md).
    Forbidden,
    /// A bus name is already provided by another connection.
    NameTaken,
    /// The registration policy does not let this peer register the name.
    NotPermitted,
    /// The provider of a routed call disconnected before answering.
    ProviderGone,
    /// A routed call got no answer within the bus call timeout.
    CallTimeout,
    /// A subscriber fell too far behind its events and is disconnected.
    SlowSubscriber,
    /// A per-connection limit (bus names, subscriptions, a batch's response size) is reached.
    LimitReached,
}

impl ErrorCode {
    /// The numeric code on the wire.
    pub const fn code(self) -> i32 {
        match self {
            Self::ParseError => -32700,
            Self::InvalidRequest => -32600,
            Self::MethodNotFound => -32601,
            Self::InvalidParams => -32602,
            Self::InternalError => -32603,
            Self::ServerBusy => -32000,
            Self::FrameTooLarge => -32001,
            Self::TooManyConnections => -32002,
            Self::UnsupportedEncoding => -32003,
            Self::FrameTimeout => -32004,
            Self::OutOfDescriptors => -32005,
            Self::AccessDenied => -32006,
            Self::Unauthorized => -32007,
            Self::Forbidden => -32008,
            Self::NameTaken => -32020,
            Self::NotPermitted => -32021,
            Self::ProviderGone => -32022,
            Self::CallTimeout => -32023,
            Self::SlowSubscriber => -32024,
            Self::LimitReached => -32025,
        }
    }

    /// The standard message for the code.
    pub const fn message(self) -> &'static str {
        match self {
            Self::ParseError => "Parse error",
            Self::InvalidRequest => "Invalid Request",
            Self::MethodNotFound => "Method not found",
            Self::InvalidParams => "Invalid params",
            Self::InternalError => "Internal error",
            Self::ServerBusy => "Server busy",
            Self::FrameTooLarge => "Frame too large",
            Self::TooManyConnections => "Too many connections",
            Self::UnsupportedEncoding => "Unsupported body encoding",
            Self::FrameTimeout => "Frame timeout",
            Self::OutOfDescriptors => "Out of file descriptors",
            Self::AccessDenied => "Access denied",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::NameTaken => "Name taken",
            Self::NotPermitted => "Not permitted",
            Self::ProviderGone => "Provider gone",
            Self::CallTimeout => "Call timed out",
            Self::SlowSubscriber => "Subscriber too slow",
            Self::LimitReached => "Limit reached",
        }
    }
}

/// An error answered to a request: a code, a message and optional JSON data.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// The numeric code (see [`ErrorCode`]; applications may use their own).
    pub code: i32,
    /// A one-line human-readable message.
    pub message: Cow<'static, str>,
    /// Optional structured detail, sent as the error's `data` member.
    pub data: Option<serde_json::Value>,
}

impl RpcError {
    /// An error with a code and message of the caller's choosing.
    pub fn new(code: i32, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// An error of a known kind with a specific message.
    pub fn with(kind: ErrorCode, detail: impl fmt::Display) -> Self {
        Self::new(kind.code(), format!("{}: {detail}", kind.message()))
    }

    /// An error of a known kind with its standard message.
    pub fn of(kind: ErrorCode) -> Self {
        Self::new(kind.code(), kind.message())
    }

    /// Attaches structured detail.
    pub fn data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(data);
        self
    }

    /// -32700 with the parser's explanation.
    pub fn parse_error(detail: impl fmt::Display) -> Self {
        Self::with(ErrorCode::ParseError, detail)
    }

    /// -32600 with what is wrong with the request.
    pub fn invalid_request(detail: impl fmt::Display) -> Self {
        Self::with(ErrorCode::InvalidRequest, detail)
    }

    /// -32601 naming the method.
    pub fn method_not_found(method: &str) -> Self {
        Self::with(
            ErrorCode::MethodNotFound,
            format_args!("no method named {method:?}"),
        )
    }

    /// -32602 with what is wrong with the params.
    pub fn invalid_params(detail: impl fmt::Display) -> Self {
        Self::with(ErrorCode::InvalidParams, detail)
    }

    /// -32603 with what failed.
    pub fn internal(detail: impl fmt::Display) -> Self {
        Self::with(ErrorCode::InternalError, detail)
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for RpcError {}
