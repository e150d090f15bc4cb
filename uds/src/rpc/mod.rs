//! The multiplexed chunk RPC, wire-compatible with the Go package's
//! `highlevel/chunk/rpc`.
//!
//! Each frame carries one envelope (protobuf). A [`Client`] sends many
//! calls at once over one connection (or, under load, a few to the same
//! server: [`ClientBuilder::max_connections`]) and matches replies by id,
//! in any order; a [`Server`] dispatches each request by method name to a handler,
//! with the caller's [`Cred`](crate::Cred), a deadline and cancellation in
//! its [`Context`]. Extensions beyond the Go format (cancellation) use new
//! envelope fields that a Go peer ignores; see `PROTOCOL.md`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use uds::rpc::{CallOptions, Client, HandlerError, RpcError, Server};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("rpc.sock");
//! let server = Server::builder()
//!     .handler("/upper", |ctx, req| async move {
//!         let who = ctx.peer().uid; // the caller's uid, from the kernel
//!         let text = std::str::from_utf8(&req).map_err(|_| HandlerError::bad_data("not UTF-8"))?;
//!         Ok(format!("{} (uid {who})", text.to_uppercase()).into())
//!     })
//!     .build()?;
//! server.serve(uds::net::Listener::bind(&path)?);
//!
//! let client = Client::connect(&path).await?;
//! let reply = client.call("/upper", "hi").await?;
//! assert!(reply.starts_with(b"HI (uid "));
//!
//! match client.call("/nope", "").await {
//!     Err(RpcError::MethodNotFound { .. }) => {}
//!     other => panic!("{other:?}"),
//! }
//! let short = CallOptions::timeout(Duration::from_secs(1));
//! client.call_with("/upper", "x".into(), short).await?;
//!
//! let report = server.shutdown(Duration::from_secs(1)).await;
//! assert!(report.graceful);
//! # Ok(()) }
//! ```

mod cancel;
mod client;
mod defaults;
mod envelope;
mod error;
mod outbox;
mod server;
mod typed;

pub use cancel::Cancellation;
pub(crate) use client::CloseCause;
pub use client::{CallOptions, Client, ClientBuilder, RpcReply, RpcSender, RpcStream};
pub use defaults::{
    DEFAULT_CALL_TIMEOUT, DEFAULT_CLIENT_STREAM_WINDOW, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CALLS,
    DEFAULT_MAX_CALLS_PER_CONNECTION, DEFAULT_MAX_CALLS_PER_PROCESS, DEFAULT_MAX_CALLS_PER_USER,
    DEFAULT_MAX_CONNECTIONS_PER_USER, DEFAULT_MAX_QUEUED_PER_PROCESS, DEFAULT_MAX_QUEUED_PER_USER,
    DEFAULT_MAX_TIMEOUT, DEFAULT_STREAM_IDLE_TIMEOUT, DEFAULT_STREAM_WINDOW, DEFAULT_WRITE_QUEUE,
    DEFAULT_WRITE_STALL, MIN_STREAM_IDLE_TIMEOUT, TOO_MANY_CALLS,
};
/// The envelope's wire encoding, for tests and fuzzing: not a stable API
/// (the RPC client and server are the way to use the protocol).
#[doc(hidden)]
pub mod __wire {
    pub use super::envelope::{Envelope, EnvelopeError, field};
}
pub use error::{BuildError, ErrorCode, HandlerError, RpcError, SharedError};
pub use server::{
    Context, FromContext, RpcItems, ServedConnection, Server, ServerBuilder, ShutdownReport,
};
