//! Plugins: a host process runs plugin processes that implement a
//! `#[uds::service]` trait, and calls them through the generated client.
//!
//! The host side is [`Command`]: it starts the plugin program with one end
//! of a socketpair as an inherited descriptor (no filesystem path, nothing
//! to squat or race), checks that what answers is the child it spawned (by
//! the kernel's credentials of a socket the child creates and hands back),
//! runs a handshake (protocol version, services, method names), and hands
//! out a [`Plugin`]: a typed client plus the process's supervision. The
//! plugin's stdout and stderr become `tracing` events. Dropping the
//! `Plugin` kills the process; [`Plugin::shutdown`] stops it gracefully.
//!
//! The plugin side is one line: [`serve`] (or [`run`] in a `main` returning
//! `ExitCode`) takes the inherited socket, answers the handshake, serves,
//! and returns once the host closes the connection or asks it to stop, after
//! its calls in flight are done. Run by hand, it says it must be started by
//! its host and exits 2.
//!
//! Users of `HashiCorp`'s go-plugin will recognise the shape: a handshake with a
//! protocol version, the plugin's stdio forwarded to the host's log, kill on
//! drop, graceful shutdown. What differs: the trait itself is the contract
//! (the handshake checks every method name, so a plugin built against an
//! older trait is refused at spawn with the missing methods named); the
//! transport is an inherited socketpair rather than a socket path printed on
//! stdout; the peer's identity is checked by the kernel, not by a cookie.
//!
#![cfg_attr(feature = "json", doc = "```no_run")]
#![cfg_attr(not(feature = "json"), doc = "```ignore")]
//! // In a crate shared by the host and its plugins:
//! #[uds::service]
//! pub trait Greeter {
//!     async fn hello(&self, name: String) -> String;
//! }
//!
//! // The plugin's binary:
//! struct Impl;
//! impl Greeter for Impl {
//!     async fn hello(&self, name: String) -> String {
//!         format!("hello {name}")
//!     }
//! }
//! # mod plugin_main {
//! # use super::*;
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     uds::plugin::run(GreeterServer::new(Impl)).await
//! }
//! # }
//!
//! // The host:
//! # async fn host() -> Result<(), Box<dyn std::error::Error>> {
//! let plugin = uds::plugin::Command::new("path/to/greeter-plugin")
//!     .spawn::<GreeterClient>()
//!     .await?;
//! assert_eq!(plugin.client().hello("host".into()).await?, "hello host");
//! plugin.shutdown(std::time::Duration::from_secs(5)).await?;
//! # Ok(()) }
//! # fn main() {}
//! ```

mod attach;
mod error;
mod guest;
mod handshake;
mod host;
mod output;
mod supervisor;

pub use attach::{Attached, attach};
pub use error::{Exited, PluginError};
pub use guest::{DEFAULT_SHUTDOWN_GRACE, Serve, run, serve};
pub use handshake::PROTOCOL_VERSION;
pub use host::{Command, DEFAULT_HANDSHAKE_TIMEOUT, Output};
pub use output::MAX_LINE;
pub use supervisor::{Plugin, Restart};

use crate::rpc::{Client, ServerBuilder};

/// The environment variable that tells a plugin which inherited descriptor
/// is its socket to the host.
pub const FD_ENV: &str = "UDS_PLUGIN_FD";

/// The environment variable that tells a plugin its host's pid: the
/// inherited socket is taken only if the kernel names that process as its
/// peer.
pub const HOST_ENV: &str = "UDS_PLUGIN_HOST";

/// A client of one service, as `#[uds::service]` generates it (`…Client`):
/// what a host needs to check a plugin and call it. Implemented by the
/// macro; there is no need to implement it by hand.
pub trait PluginClient: Clone + Send + Sync + 'static {
    /// The service's name (the trait's name).
    const SERVICE: &'static str;
    /// The wire names of the service's methods.
    const METHODS: &'static [&'static str];
    /// The typed client over an RPC client.
    fn from_rpc(client: Client) -> Self;
}

/// A server of one service, as `#[uds::service]` generates it (`…Server`):
/// what a plugin needs to serve it and describe it in the handshake.
/// Implemented by the macro.
pub trait PluginService {
    /// The service's name (the trait's name).
    const SERVICE: &'static str;
    /// The wire names of the service's methods.
    const METHODS: &'static [&'static str];
    /// Registers every method on `builder`.
    fn register(&self, builder: ServerBuilder) -> ServerBuilder;
}
