#![no_implicit_prelude]

/// A service in a module without the prelude: generated code must use
/// absolute paths only.
#[::uds::service]
pub trait Svc {
    /// Doubles.
    async fn double(&self, n: i64) -> i64;
    /// Adds (several JSON arguments).
    async fn add(&self, a: i64, b: i64, ctx: i64) -> i64;
    /// Fails.
    async fn fail(&self) -> ::std::result::Result<u8, ::std::string::String>;
    /// Streams.
    async fn count(&self) -> ::uds::ServerStream<u8>;
}

fn main() {}
