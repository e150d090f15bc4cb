//! The plugin API of the plugin tests: a trait shared by the test host
//! (`tests/plugin.rs`) and the test plugin binary (`uds-test-plugin`).

use uds::ServerStream;

/// What the test plugin serves.
#[uds::service]
pub trait TestPlugin {
    /// Returns its argument.
    async fn echo(&self, text: String) -> String;
    /// Sleeps `ms` milliseconds, then returns `ms`.
    async fn slow(&self, ms: u64) -> u64;
    /// Streams 0..n, one item every `every_ms` milliseconds.
    async fn count(&self, n: u32, every_ms: u64) -> ServerStream<u32>;
    /// The plugin's pid.
    async fn pid(&self) -> u32;
    /// Writes `mib` MiB to stderr (as long lines), then returns.
    async fn spew(&self, mib: u32) -> u32;
    /// Writes one line to stderr.
    async fn say(&self, line: String);
    /// Exits the plugin process with `code` at once (a crash).
    async fn crash(&self, code: i32);
}

/// A second service the test plugin can serve on the same connection.
#[uds::service]
pub trait Admin {
    /// How many calls the plugin has served.
    async fn served(&self) -> u64;
}
