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
//! Bottom up: each module uses only the ones above it in this table (its
//! "uses" column is exact; `sys` is the private OS layer). `frame` and
//! `codec` are leaves: neither uses another module of the crate.
//!
//! | module | owns | uses |
//! |---|---|---|
//! | [`cred`] | [`Cred`]: a peer's pid/uid/gid, read from the kernel | `sys` |
//! | [`auth`] | [`auth::Policy`]: who may connect (default: same user) | `cred`, `sys` |
//! | [`net`] | [`net::Listener`], [`net::connect`], [`net::pair`], [`net::Conn`] | `auth`, `cred`, `sys` |
//! | [`frame`] | the length-prefixed chunk framing, with size and time limits | — |
//! | [`codec`] | JSON (feature `json`) and protobuf (feature `proto`) encoding of values | — |
//! | [`rpc`] | the multiplexed RPC: [`rpc::Client`], [`rpc::Server`], deadlines, cancellation | `net`, `frame`, `codec`, `cred`, `sys` |
//! | [`stream`] | typed streams of JSON or protobuf values over one connection | `net`, `frame`, `codec`, `cred` |
//! | [`macro@service`], [`CallError`], [`ServerStream`], [`Streaming`] | `#[uds::service]`: typed clients and servers from a trait (the private `service` module) | `rpc`, `codec` |
//! | [`plugin`] | plugin processes: spawn on an inherited socketpair, handshake, supervise, stop; the plugin's one-line `serve` | `rpc`, `net`, `cred`, `sys` |
//!
//! For a host running plugins, start with [`plugin`]: its docs show the
//! trait, the plugin's `main` and the host in a few lines.
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
//!   reachable with looser permissions than asked. Every step works through
//!   directory descriptors opened without following links, so a user who can
//!   write the socket's directory can make a bind fail, never make it touch
//!   another file.
//! - An existing path is replaced only if it is a socket no server answers
//!   on; a regular file, a directory, a symlink or a live server is an error.
//! - The [`auth::Policy`] runs on the kernel credentials of each accepted
//!   peer before anything is read; denied peers are closed and logged (an
//!   RPC server first writes them one constant "permission denied" frame).
//!   Methods of a `#[uds::service]` can require more: see its
//!   authorization section.
//! - The client checks the socket file (type, owner, group, mode) and then the
//!   server's credentials on the connected socket, which cannot be swapped.
//! - Linux abstract sockets have no file permissions: the policy is the only
//!   gate there.
//!
//! # Outside a tokio runtime
//!
//! The crate's sockets live on tokio's reactor. A fallible call that needs
//! it (binding, connecting, [`net::pair`], [`net::Conn::from_std`], spawning
//! a plugin) returns [`net::NetError::NoRuntime`] (inside the layer's own
//! error) when called outside a runtime; the infallible constructors that
//! start tasks (`rpc::ClientBuilder::build`, `rpc::Client::new`,
//! `rpc::Server::serve`, `serve_connection`) panic there, and say so in
//! their `# Panics` sections. Building a server (`ServerBuilder::build`)
//! needs no runtime.
//!
//! # Platforms
//!
//! Linux and macOS. Elsewhere reading peer credentials fails with
//! [`cred::CredError::Unsupported`] rather than making one up.

// No panics on anything a peer controls: unwrap/expect are banned outside tests.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

#[warn(clippy::missing_errors_doc)]
pub mod auth;
#[warn(clippy::missing_errors_doc)]
pub mod codec;
pub mod cred;
#[warn(clippy::missing_errors_doc)]
pub mod frame;
mod log_limit;
pub mod net;
pub mod plugin;
pub mod rpc;
#[warn(clippy::missing_errors_doc)]
mod service;
#[cfg(any(feature = "json", feature = "proto"))]
#[warn(clippy::missing_errors_doc)]
pub mod stream;
mod sys;

pub use cred::Cred;
pub use rpc::Context;
#[allow(deprecated)]
pub use service::ClientStream;
pub use service::{CallError, ServerStream, Streaming};
/// Turns a trait into an RPC service: a typed client `{Trait}Client` and a
/// server `{Trait}Server` for any implementation.
///
#[cfg_attr(feature = "json", doc = "```")]
#[cfg_attr(not(feature = "json"), doc = "```ignore")]
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use uds::{CallError, Context, ServerStream, Streaming};
/// use futures_util::StreamExt;
///
/// #[derive(Debug, serde::Serialize, serde::Deserialize)]
/// pub enum MathError { DivideByZero }
///
/// /// A calculator.
/// #[uds::service]                     // JSON; `#[uds::service(codec = "proto")]` for prost types
/// pub trait Calculator {
///     /// `a + b`.
///     async fn add(&self, a: i64, b: i64) -> i64;
///     /// Typed application error, distinct from transport errors.
///     async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
///     /// A wire name of your choice (to match a Go server), and the context.
///     #[uds(name = "/math/sum")]
///     async fn sum(&self, ctx: &Context, ints: Vec<i64>) -> i64;
///     /// Server streaming, with backpressure.
///     async fn ticks(&self, n: u64) -> ServerStream<u64>;
///     /// Client streaming: ordinary arguments, then the stream, last.
///     async fn total(&self, scale: i64, ints: Streaming<i64>) -> i64;
///     /// Bidirectional: items flow both ways at once.
///     async fn doubles(&self, ints: Streaming<i64>) -> ServerStream<i64>;
/// }
///
/// struct Calc;
/// impl Calculator for Calc {
///     async fn add(&self, a: i64, b: i64) -> i64 { a + b }
///     async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
///         a.checked_div(b).ok_or(MathError::DivideByZero)
///     }
///     async fn sum(&self, ctx: &Context, ints: Vec<i64>) -> i64 {
///         let _caller = ctx.peer().uid; // kernel credentials of the caller
///         ints.iter().sum()
///     }
///     async fn ticks(&self, n: u64) -> ServerStream<u64> { ServerStream::iter(0..n) }
///     async fn total(&self, scale: i64, mut ints: Streaming<i64>) -> i64 {
///         let mut sum = 0;
///         while let Some(Ok(i)) = ints.next().await {
///             sum += i;
///         }
///         sum * scale
///     }
///     async fn doubles(&self, ints: Streaming<i64>) -> ServerStream<i64> {
///         ServerStream::new(ints.filter_map(|i| async move { i.ok().map(|i| 2 * i) }))
///     }
/// }
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("calc.sock");
/// let server = CalculatorServer::new(Calc).build()?;
/// server.serve(uds::net::Listener::bind(&path)?);
///
/// let calc = CalculatorClient::connect(&path).await?;
/// assert_eq!(calc.add(2, 3).await?, 5);
/// assert!(matches!(calc.div(1, 0).await, Err(CallError::App(MathError::DivideByZero))));
/// assert_eq!(calc.sum(vec![1, 2, 3]).await?, 6);
/// let ticks: Vec<u64> = calc.ticks(3).await?.map(|t| t.unwrap()).collect().await;
/// assert_eq!(ticks, [0, 1, 2]);
/// // The caller passes any `Stream` (a channel's receiver, an iterator, ...).
/// assert_eq!(calc.total(10, futures_util::stream::iter([1, 2, 3])).await?, 60);
/// let doubled: Vec<i64> = calc
///     .doubles(futures_util::stream::iter([1, 2]))
///     .await?
///     .map(|i| i.unwrap())
///     .collect()
///     .await;
/// assert_eq!(doubled, [2, 4]);
/// # Ok(()) }
/// ```
///
/// # What it accepts
///
/// Methods are `async fn` taking `&self`, optionally `ctx: &uds::Context`
/// first, then arguments by value (the last may be a client stream,
/// `items: uds::Streaming<T>`), and returning `T`, `Result<T, E>`,
/// `uds::ServerStream<T>` or `uds::ServerStream<Result<T, E>>` (or
/// nothing). The trait may have `Send`, `Sync`
/// and `'static` as supertraits. Each mistake is one compile error on the
/// offending token saying what to write instead, all reported in one pass;
/// a type that cannot travel with the service's codec is reported on that
/// type (through [`codec::JsonType`] / [`codec::ProtoType`]).
///
/// - **Wire names** default to `/{Trait}/{method}` (a raw identifier without
///   `r#`); `#[uds(name = "...")]` on a method sets another.
/// - **JSON** (default): no argument → `null`; one → its JSON; several → an
///   object keyed by parameter name, in which a missing key is bad data
///   unless the parameter is `#[uds(default)] p: Option<T>` (then `None`).
///   The result is its JSON; no result is `null`. See `PROTOCOL.md` §3.1
///   for evolving a service without breaking older peers.
/// - **Proto** (`codec = "proto"`): at most one `prost::Message` argument and
///   a `prost::Message` result.
/// - **`Result<T, E>`**: `Err(e)` reaches the client as
///   [`CallError::App(e)`](CallError), apart from transport errors
///   ([`CallError::Rpc`]). Write `Result<T, E>` itself: a `Result` alias as
///   the result type is a compile error (its errors would arrive as a
///   success), and `E` must travel with the codec (not `io::Error` or
///   `Box<dyn Error>`: use your own error type, or `String`).
/// - **The four kinds of call**, one naming scheme: what comes to you is a
///   [`Streaming<T>`], what you send back from a handler is a
///   [`ServerStream<T>`]:
///
///   | kind | trait method | the client calls |
///   |---|---|---|
///   | unary | `async fn f(&self, a: A) -> R` | `client.f(a).await` → `R` |
///   | server streaming | `async fn f(&self, a: A) -> ServerStream<T>` | `client.f(a).await` → `Streaming<T>` |
///   | client streaming | `async fn f(&self, a: A, s: Streaming<T>) -> R` | `client.f(a, any_stream).await` → `R` |
///   | bidirectional | `async fn f(&self, a: A, s: Streaming<T>) -> ServerStream<U>` | `client.f(a, stream).await` → `Streaming<U>` |
///
///   Items flow under credit both ways (a slow consumer slows the
///   producer; memory stays bounded); dropping the client's future or
///   stream cancels the call on the server; a handler that answers or ends
///   early stops the client's producer. A bidirectional call's input must
///   be `Send + 'static` (a task the returned stream owns sends it).
/// - **Stream deadlines**: a streaming call has no deadline unless the
///   caller sets one (`with_timeout`), and the server's
///   `max_stream_duration` caps it; instead the server sends keep-alives
///   and a stream silent for `CallOptions::idle_timeout` (60 s) ends with
///   [`rpc::RpcError::StreamIdle`], so a subscription can live for hours
///   and a hung server is still noticed.
/// - **`ServerStream<Result<T, E>>`**: the client gets a
///   `Streaming<T, CallError<E>>`; an `Err(e)` item ends the stream, and
///   arrives as `Err(CallError::App(e))`.
/// - **`crate = "path"`** names the uds crate when it is renamed in
///   `Cargo.toml`. The codec's cargo feature (`json`, `proto`) must be on.
/// - **`#[cfg(...)]`** on a method removes it from everything generated;
///   **`#[deprecated]`** carries to the client's method, and the generated
///   code itself never warns.
///
/// # Authorization
///
/// Declarative and fail-closed, on the caller's kernel credentials, checked
/// before the arguments are decoded:
///
/// - `#[uds::service(allow = "same_user")]` or `#[uds::service(allow(uid =
///   1000, gid = [4242, 4243], same_user))]` on the trait: every method
///   requires it. A peer matches if it is any of the listed identities
///   (`gid` matches the primary group and, where the kernel reports them,
///   supplementary groups).
/// - `#[uds(allow(...))]` on a method **narrows** it: the call must pass the
///   trait's rule *and* the method's (a method cannot loosen the trait).
/// - `policy = my_policy` (on the trait or a method, beside or instead of
///   `allow`) names a `fn(&uds::Cred) -> bool`; it must return `true` too. A
///   policy that panics denies.
///
/// A denied call never runs: the client gets
/// [`rpc::RpcError::PermissionDenied`] (a Go client: a server error with
/// the text `uds: permission denied`), and the server logs a rate-limited
/// warning. The server's [`auth::Policy`] still decides who may connect at
/// all; a peer it denies is told "permission denied" too.
///
/// # What it generates
///
/// - The trait, with each method returning `impl Future + Send` (implement
///   it with `async fn` as usual).
/// - `{Trait}Client`: `Clone` (clones share the connection) and `Debug`;
///   built with `new(rpc::Client)`, `from_conn(net::Conn)` or
///   `connect(path)` (with the client's socket checks); one async method per
///   trait method, minus the context (a `Streaming<T>` parameter becomes
///   `impl Stream<Item = T>`); `rpc()` for the underlying
///   [`rpc::Client`]. It implements [`plugin::PluginClient`].
/// - **Per-call options**: `client.with_timeout(d)` and
///   `client.with_options(rpc::CallOptions)` take `&self` and return a cheap
///   clone (an `Arc` clone) whose calls use them, so a deadline is set at
///   the call site — `client.with_timeout(Duration::from_millis(50)).add(2,
///   3).await` — without touching `client`; `options()` shows the current
///   ones.
/// - `{Trait}Server<T>`: `new(imp)`, `from_arc(Arc<T>)`,
///   `register(ServerBuilder)` to add the methods to a server with others,
///   `build()` for a server of its own, `METHODS` with the wire names. It
///   implements [`plugin::PluginService`].
///
/// `#[uds(...)]` goes on the trait's methods and their arguments, where the
/// macro reads it; in the `impl` it is not needed (rustc would say "`uds` is
/// a crate, not an attribute").
///
/// Method names the client uses itself (`new`, `connect`, `clone`,
/// `with_timeout`, ...) and names starting with `__` are reserved: rename
/// the method and keep its wire name with `#[uds(name = "...")]`.
pub use uds_macros::service;

// The module's version (01 for uds 0.1) is part of its name: see the file.
#[doc(hidden)]
#[warn(clippy::missing_errors_doc)]
#[path = "private.rs"]
pub mod __private01;

/// The README's code blocks, compiled and run as doc tests so that every
/// snippet there works as written (they use the `json` feature).
#[cfg(all(doctest, feature = "json"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
