//! A plugin binary: implements the shared `Greeter` trait and serves it to
//! the host that started it. Its whole `main` is one line.
//!
//! Run by hand it says it must be started by its host and exits 2; run
//! `cargo run -p uds-examples --example plugin_host` instead.

use std::time::Duration;

use uds::ServerStream;
use uds_examples::{Greeter, GreeterServer};

struct Impl;

impl Greeter for Impl {
    async fn greet(&self, name: String) -> String {
        eprintln!("greeting {name}"); // becomes a tracing event in the host
        format!("hello {name}, from plugin pid {}", std::process::id())
    }

    async fn count(&self, upto: u32) -> ServerStream<u32> {
        ServerStream::new(futures_util::stream::unfold(1, move |n| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            (n <= upto).then_some((n, n + 1))
        }))
    }

    async fn crash(&self, code: i32) {
        std::process::exit(code);
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    uds::plugin::run(GreeterServer::new(Impl)).await
}
