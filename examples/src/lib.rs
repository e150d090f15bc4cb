//! Runnable examples of the `uds` crate live in `examples/`; run one with
//! `cargo run -p uds-examples --example NAME`.
//!
//! This library is the crate a host and its plugins share: the plugin API
//! of the `plugin_host` and `greeter_plugin` examples.

use uds::ServerStream;

/// The API a host expects of its greeter plugins.
#[uds::service]
pub trait Greeter {
    /// A greeting for `name`.
    async fn greet(&self, name: String) -> String;
    /// Counts from 1 to `upto`, one number every 10 ms.
    async fn count(&self, upto: u32) -> ServerStream<u32>;
    /// Exits the plugin process at once with `code` (to show a crash).
    async fn crash(&self, code: i32);
}
