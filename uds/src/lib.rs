//! Typed, authenticated IPC over Unix domain sockets.
//!
//! `uds` is for a host process talking to its plugins and helper processes:
//! every connection knows its peer's kernel credentials, every server applies
//! an authorization policy before reading a byte, and every client checks who
//! owns the socket it talks to. Its wire format is the Go `uds` package's, so
//! Rust and Go processes can call each other.
//!
//! # Layers
//!
//! | module | owns |
//! |---|---|
//! | [`cred`] | [`Cred`]: a peer's pid/uid/gid, read from the kernel |
//! | [`auth`] | [`auth::Policy`]: who may connect (default: same user) |
//! | [`net`] | [`net::Listener`], [`net::connect`], [`net::pair`], [`net::Conn`] |
//! | [`frame`] | the length-prefixed chunk framing, with size and time limits |
//! | [`rpc`] | the multiplexed RPC: [`rpc::Client`], [`rpc::Server`], deadlines, cancellation |
//! | [`codec`] | JSON (feature `json`) and protobuf (feature `proto`) encoding of values |
//! | [`stream`] | typed streams of JSON or protobuf values over one connection |
//!
//! # Example
//!
//! A server that greets each peer by uid, and a client that checks the
//! server's identity before talking to it:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use uds::frame::{FrameReader, FrameWriter};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("greeter.sock");
//! // Mode 0600 and the same-user policy are the defaults.
//! let listener = uds::net::Listener::bind(&path)?;
//!
//! let server = tokio::spawn(async move {
//!     let conn = listener.accept().await?;
//!     let uid = conn.peer_cred().uid; // from the kernel, not from the peer
//!     let (rd, wr) = tokio::io::split(conn);
//!     let (mut rd, mut wr) = (FrameReader::new(rd), FrameWriter::new(wr));
//!     while let Some(name) = rd.read_frame().await? {
//!         let reply = format!("hello {}, uid {uid}", String::from_utf8_lossy(&name));
//!         wr.write_frame(reply.as_bytes()).await?;
//!     }
//!     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//! });
//!
//! // Checks that the file is a socket owned by us, not accessible to others,
//! // and that the process listening on it runs as us.
//! let conn = uds::net::connect(&path).await?;
//! let (rd, wr) = tokio::io::split(conn);
//! let (mut rd, mut wr) = (FrameReader::new(rd), FrameWriter::new(wr));
//! wr.write_frame(b"plugin").await?;
//! let reply = rd.read_frame().await?.expect("a reply");
//! assert!(reply.starts_with(b"hello plugin, uid "));
//! drop((rd, wr)); // both halves: only then is the socket closed
//! server.await?.map_err(|e| e.to_string())?;
//! # Ok(()) }
//! ```
//!
//! # Security model
//!
//! - The listener binds its socket in a fresh private directory, sets mode
//!   and owner there, and only then links it at its path: the socket is never
//!   reachable with looser permissions than asked.
//! - An existing path is replaced only if it is a socket no server answers
//!   on; a regular file, a directory, a symlink or a live server is an error.
//! - The [`auth::Policy`] runs on the kernel credentials of each accepted
//!   peer before anything is read; denied peers are closed and logged.
//! - The client checks the socket file (type, owner, group, mode) and then the
//!   server's credentials on the connected socket, which cannot be swapped.
//! - Linux abstract sockets have no file permissions: the policy is the only
//!   gate there.
//!
//! # Platforms
//!
//! Linux and macOS. Elsewhere reading peer credentials fails with
//! [`cred::CredError::Unsupported`] rather than making one up.

// No panics on anything a peer controls: unwrap/expect are banned outside tests.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod auth;
pub mod codec;
pub mod cred;
pub mod frame;
pub mod net;
pub mod rpc;
pub mod service;
#[cfg(any(feature = "json", feature = "proto"))]
pub mod stream;
mod sys;

pub use cred::Cred;
pub use rpc::Context;
pub use service::{CallError, ClientStream, ServerStream};
pub use uds_macros::service;

#[doc(hidden)]
pub use service::__private;
