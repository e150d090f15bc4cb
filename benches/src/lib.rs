//! The echo benchmark of the Go `uds` package's README, run fairly: every
//! row echoes the payload back (the Go comparison's gRPC handler replied
//! with an empty message), all rows run in one process, interleaved round by
//! round so that machine drift hits them alike.
//!
//! Rows:
//! - `floor`: the fastest plain echo there is over a tokio Unix socket, one
//!   connection per user, a 4-byte length header, a request frame built
//!   once, replies read into a reused buffer, the server echoing each whole
//!   frame with one `write_all`, nothing allocated per request — what any
//!   protocol costs at least;
//! - `floor-std`: the same with std's blocking sockets, a thread per
//!   connection on both sides. Ratios are to the faster floor of each pass;
//! - `uds-raw`: the uds chunk RPC, no codec, one shared client;
//! - `uds-service`: a `#[uds::service(codec = "proto")]` client and server,
//!   `bytes data = 1` request and reply, one shared client;
//! - `tarpc`: the best Rust peer, bincode over tarpc's length-delimited Unix
//!   transport, a `Bytes` payload, one shared client;
//! - `tonic`: gRPC over a Unix socket with the same messages, one shared
//!   channel, default settings;
//! - `tonic-tuned`: the same with larger HTTP/2 windows.
//!
//! The streaming rows (`stream-floor`, `stream-floor-per-item`,
//! `stream-uds`, `stream-uds-w4096`, `stream-tonic`, `stream-tonic-tuned`;
//! see [`streaming`]) stream items of one size over one connection,
//! client→server and server→client, in items per second; `uds-bench` runs
//! them after the echo rows.
//!
//! Run `cargo run --release -p uds-benches --bin uds-bench -- --help`.

// Reported figures: float conversions of counts and times lose nothing that matters.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

pub mod floor;
pub mod rows;
pub mod stats;
pub mod streaming;
pub mod tarpc_row;

/// The benchmark's protobuf message: `bytes data = 1`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoMsg {
    /// The payload.
    #[prost(bytes = "bytes", tag = "1")]
    pub data: bytes::Bytes,
}
