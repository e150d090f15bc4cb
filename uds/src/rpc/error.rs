use std::fmt;
use std::sync::Arc;

/// An error kept as the [`source()`](std::error::Error::source) of an
/// [`RpcError`], shared so that `RpcError` stays `Clone`. It displays as,
/// and has the source of, the error it holds.
///
/// Two compare equal when their texts are equal: the errors held (I/O
/// errors above all) are not comparable themselves, and `RpcError` is
/// compared in tests and by callers.
#[derive(Clone)]
pub struct SharedError(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl SharedError {
    pub(crate) fn new(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        SharedError(Arc::new(err))
    }

    /// The error held.
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Debug for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for SharedError {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl Eq for SharedError {}

/// The `err_type` values of the wire format (`0` means no error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 1: no handler is registered under the method name.
    MethodNotFound = 1,
    /// 2: the call's deadline passed.
    DeadlineExceeded = 2,
    /// 3: the request could not be decoded.
    BadData = 3,
    /// 4: the handler returned an error.
    Server = 4,
}

impl ErrorCode {
    /// The wire value.
    pub fn as_u32(self) -> u32 {
        self as u32
    }
}

/// Errors of an RPC call, as the caller sees them.
///
/// The first four mirror the wire's `err_type` values; the rest arise on the
/// client side. Only [`RpcError::DeadlineExceeded`] is
/// [retryable](RpcError::is_retryable), as in the Go package.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The server has no handler for the method (`err_type` 1).
    #[error("method not found: {message} (check the method name and that the server registers it)")]
    MethodNotFound {
        /// The server's text.
        message: String,
    },
    /// The deadline passed before a reply (`err_type` 2, or measured locally).
    #[error("deadline exceeded: {message} (raise the call's timeout if the server needs longer)")]
    DeadlineExceeded {
        /// Which side noticed, in words.
        message: String,
    },
    /// The server could not decode the request (`err_type` 3), or the client
    /// could not decode the reply.
    #[error("bad data: {message}")]
    BadData {
        /// What was wrong.
        message: String,
    },
    /// The handler returned an error (`err_type` 4).
    #[error("server error: {message}")]
    Server {
        /// The handler's message.
        message: String,
    },
    /// The handler returned an application error value (`err_type` 4 with
    /// the uds `app_error` flag): `data` holds it, encoded by the service's
    /// codec. Generated clients decode it into the method's error type.
    #[error("application error: {message}")]
    Application {
        /// The server's text.
        message: String,
        /// The encoded error value.
        data: bytes::Bytes,
    },
    /// The server sent an `err_type` this client does not know.
    #[error("unknown error type {code} from the server: {message}")]
    Unknown {
        /// The `err_type` value.
        code: u32,
        /// The server's text.
        message: String,
    },
    /// The connection closed (or broke) before the reply arrived. The call may
    /// or may not have run on the server.
    #[error("connection closed: {reason}")]
    ConnectionClosed {
        /// Why, as far as known.
        reason: String,
        /// The error that closed it, when there was one (a read or write
        /// failure, a frame cut short): this error's
        /// [`source()`](std::error::Error::source).
        source: Option<SharedError>,
    },
    /// The peer process exited, so its connection closed: known when a
    /// higher layer watches the peer (a [plugin](crate::plugin) process).
    /// Every call in flight, and every later call, fails with it. A call in
    /// flight may or may not have run.
    #[error(
        "the peer process (pid {pid}) exited: {status}; calls in flight may or may not have run"
    )]
    PeerExited {
        /// The process id.
        pid: u32,
        /// How it exited: a code, or the signal that killed it.
        status: std::process::ExitStatus,
    },
    /// The peer broke the protocol; the connection was closed.
    #[error("protocol error: {reason}; the connection was closed")]
    Protocol {
        /// What the peer did.
        reason: String,
    },
    /// A request or reply is larger than the frame limit.
    #[error(
        "message of {len} bytes exceeds the frame limit of {max} bytes; raise max_frame_len on both sides if this is expected"
    )]
    FrameTooLarge {
        /// The message size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Encoding a request or decoding a reply with a codec failed.
    #[error("codec error: {message}")]
    Codec {
        /// The codec's message.
        message: String,
    },
    /// A streaming call heard nothing from the server — no item, no end,
    /// no keep-alive — for its idle timeout
    /// ([`CallOptions::idle_timeout`](super::CallOptions::idle_timeout)):
    /// the server is stalled or gone. The call was cancelled. Retryable.
    #[error(
        "stream idle: nothing from the server for {after:?}; it is stalled or gone (retry, or raise CallOptions::idle_timeout)"
    )]
    StreamIdle {
        /// The idle timeout that passed.
        after: std::time::Duration,
    },
    /// Items can no longer be sent on a client stream: the call has ended
    /// (the server answered or ended its stream, or the call was cancelled,
    /// timed out or lost its connection). The call's reply or stream says
    /// how it ended.
    #[error("stream closed: {reason}; the call's reply or stream says how it ended")]
    StreamClosed {
        /// Why, in words.
        reason: String,
    },
    /// The server refused the call: the method's authorization
    /// (`#[uds(allow(...))]`, `#[uds(policy = ...)]`) does not let this
    /// process's credentials in, or the server's accept policy refused the
    /// connection. The call did not run. On the wire: `err_type` 4 with
    /// `reason` 1 (field 21); a Go client sees a server error with the text
    /// `uds: permission denied`.
    #[error(
        "permission denied: {message} (the server does not allow this process's user or groups to make this call; run as an allowed user or change the server's policy)"
    )]
    PermissionDenied {
        /// The server's text.
        message: String,
    },
    /// The server is shutting down and did not run the call: retry it on
    /// another server, or once this one is back. On the wire: `err_type` 4
    /// with `reason` 2 (field 21); a Go client sees a server error with the
    /// text `uds: server shutting down`.
    #[error(
        "server shutting down: {message} (the call did not run; retry once the server is back)"
    )]
    ShuttingDown {
        /// The server's text.
        message: String,
    },
}

/// Why a [`ServerBuilder`](super::ServerBuilder) could not build its
/// server: a configuration mistake, found at
/// [`build`](super::ServerBuilder::build), never a call's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Methods were registered more than once.
    #[error("methods registered more than once: {}", .methods.join(", "))]
    DuplicateMethods {
        /// The names, in the order of their second registration.
        methods: Vec<String>,
    },
    /// A limit is outside the values it can take.
    #[error("{setting} must be between {min} and {max}, not {value}")]
    OutOfRange {
        /// The builder setting, e.g. `"max_calls"`.
        setting: &'static str,
        /// The value given.
        value: usize,
        /// The least value allowed.
        min: usize,
        /// The largest value allowed.
        max: usize,
    },
}

impl RpcError {
    /// Whether retrying the same call may succeed: a deadline error, a
    /// stream that went idle, or a server that was shutting down (the call
    /// did not run).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RpcError::DeadlineExceeded { .. }
                | RpcError::StreamIdle { .. }
                | RpcError::ShuttingDown { .. }
        )
    }

    /// The wire code this error corresponds to, if any.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            RpcError::MethodNotFound { .. } => Some(ErrorCode::MethodNotFound),
            RpcError::DeadlineExceeded { .. } => Some(ErrorCode::DeadlineExceeded),
            RpcError::BadData { .. } => Some(ErrorCode::BadData),
            RpcError::Server { .. }
            | RpcError::Application { .. }
            | RpcError::PermissionDenied { .. }
            | RpcError::ShuttingDown { .. } => Some(ErrorCode::Server),
            _ => None,
        }
    }

    /// Maps a reply's `err_type`, `reason` (field 21) and text to an error.
    /// A reason this client does not know leaves the code's meaning.
    pub(crate) fn from_wire(code: u32, reason: u32, message: String) -> Self {
        match code {
            1 => RpcError::MethodNotFound { message },
            2 => RpcError::DeadlineExceeded { message },
            3 => RpcError::BadData { message },
            4 if reason == REASON_PERMISSION_DENIED => RpcError::PermissionDenied { message },
            4 if reason == REASON_SHUTTING_DOWN => RpcError::ShuttingDown { message },
            4 => RpcError::Server { message },
            code => RpcError::Unknown { code, message },
        }
    }

    /// A closed connection with no underlying error.
    pub(crate) fn closed(reason: impl fmt::Display) -> Self {
        RpcError::ConnectionClosed {
            reason: reason.to_string(),
            source: None,
        }
    }

    /// A connection closed by `err`, which is kept as the source.
    pub(crate) fn closed_by(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        RpcError::ConnectionClosed {
            reason: err.to_string(),
            source: Some(SharedError::new(err)),
        }
    }
}

/// `reason` 1 (envelope field 21) on an `err_type` 4 reply: the call was
/// refused by an authorization rule.
pub(crate) const REASON_PERMISSION_DENIED: u32 = 1;
/// `reason` 2 (envelope field 21) on an `err_type` 4 reply: the server is
/// shutting down and did not run the call.
pub(crate) const REASON_SHUTTING_DOWN: u32 = 2;
/// The stable text of a denied call (Go peers see it).
pub(crate) const TEXT_PERMISSION_DENIED: &str = "uds: permission denied";
/// The stable text of a call refused while shutting down (Go peers see it).
pub(crate) const TEXT_SHUTTING_DOWN: &str = "uds: server shutting down";

/// An error a handler returns; becomes the reply's `err_type` and `err`.
///
/// Any `Display` error converts into one with `?` (as a server error, code
/// 4); [`HandlerError::bad_data`] marks the request itself as faulty (code 3).
/// Keep `%` out of texts meant for Go clients: they use the text as a format
/// string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
    pub(crate) app: Option<bytes::Bytes>,
    /// Envelope field 21 (0: none).
    pub(crate) reason: u32,
}

impl HandlerError {
    /// A server error (code 4) with this message.
    pub fn server(message: impl Into<String>) -> Self {
        HandlerError::with_code(ErrorCode::Server, message)
    }

    pub(crate) fn with_code(code: ErrorCode, message: impl Into<String>) -> Self {
        HandlerError {
            code,
            message: message.into(),
            app: None,
            reason: 0,
        }
    }

    /// The call is refused: the caller is not allowed to make it. The
    /// client gets [`RpcError::PermissionDenied`] (a Go client, a server
    /// error with the text `uds: permission denied`). What generated
    /// servers return for a method's `#[uds(allow(...))]`; a hand-written
    /// handler may return it too.
    pub fn permission_denied() -> Self {
        HandlerError {
            code: ErrorCode::Server,
            message: TEXT_PERMISSION_DENIED.to_owned(),
            app: None,
            reason: REASON_PERMISSION_DENIED,
        }
    }

    /// The server is shutting down and did not run the call.
    pub(crate) fn shutting_down() -> Self {
        HandlerError {
            code: ErrorCode::Server,
            message: TEXT_SHUTTING_DOWN.to_owned(),
            app: None,
            reason: REASON_SHUTTING_DOWN,
        }
    }

    /// An application error (code 4 with the uds `app_error` flag): `data` is
    /// the error value encoded by the service's codec, delivered to a uds
    /// client as [`RpcError::Application`]; `message` is what other clients
    /// (Go) see.
    pub fn application(data: bytes::Bytes, message: impl Into<String>) -> Self {
        HandlerError {
            code: ErrorCode::Server,
            message: message.into(),
            app: Some(data),
            reason: 0,
        }
    }

    /// A bad-data error (code 3): the request was malformed.
    pub fn bad_data(message: impl Into<String>) -> Self {
        HandlerError::with_code(ErrorCode::BadData, message)
    }

    /// The wire code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: fmt::Display> From<E> for HandlerError {
    fn from(err: E) -> Self {
        HandlerError::server(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::io;

    use super::*;

    #[test]
    fn a_connection_closed_by_an_error_keeps_it_as_its_source() {
        let err = RpcError::closed_by(io::Error::new(io::ErrorKind::BrokenPipe, "pipe"));
        assert_eq!(err.to_string(), "connection closed: pipe");
        let source = err.source().expect("a source");
        let io = source
            .downcast_ref::<SharedError>()
            .and_then(|s| s.get_ref().downcast_ref::<io::Error>())
            .expect("the io::Error");
        assert_eq!(io.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(err.clone(), err, "Clone + Eq still hold");
        assert!(RpcError::closed("bye").source().is_none());
    }

    #[test]
    fn build_errors_are_not_call_errors() {
        fn is_error<E: std::error::Error + Send + Sync + 'static>() {}
        is_error::<BuildError>();
        is_error::<RpcError>();
    }
}
