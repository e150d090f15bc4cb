//! The plugin of the plugin tests. Its first argument picks a behaviour:
//!
//! - `serve` (default): serves `TestPlugin`;
//! - `serve-both`: serves `TestPlugin` and `Admin`;
//! - `old`: serves a `TestPlugin` that lacks `crash` (built against an
//!   older trait);
//! - `admin-only`: serves only `Admin`;
//! - `exit-early`: exits with code 3 before serving;
//! - `never`: never answers (sleeps);
//! - `fork`: starts a copy of itself that serves, and waits for it (a
//!   wrapper that forks instead of exec'ing);
//! - `crash-on-N`: serves `TestPlugin`, and exits with code 3 on its Nth
//!   `echo` call;
//! - `serve-at PATH`: serves `TestPlugin` and `Admin` at a socket path, for
//!   a host to attach to;
//! - `stubborn`: serves `TestPlugin`, but keeps running when its host goes
//!   away (only a signal stops it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use uds::ServerStream;
use uds::plugin::{PluginService, Serve};
use uds_tests::plugin_api::{Admin, AdminServer, TestPlugin, TestPluginServer};

static SERVED: AtomicU64 = AtomicU64::new(0);

/// With `crash-on-N`, the Nth `echo` call exits the process with code 3.
static CRASH_ON: AtomicU64 = AtomicU64::new(0);

struct Impl;

impl TestPlugin for Impl {
    async fn echo(&self, text: String) -> String {
        let n = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
        if n == CRASH_ON.load(Ordering::Relaxed) {
            std::process::exit(3);
        }
        text
    }

    async fn slow(&self, ms: u64) -> u64 {
        SERVED.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }

    async fn count(&self, n: u32, every_ms: u64) -> ServerStream<u32> {
        SERVED.fetch_add(1, Ordering::Relaxed);
        let (tx, stream) = ServerStream::channel(4);
        tokio::spawn(async move {
            for i in 0..n {
                if tx.send(i).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(every_ms)).await;
            }
        });
        stream
    }

    async fn pid(&self) -> u32 {
        std::process::id()
    }

    async fn spew(&self, mib: u32) -> u32 {
        use std::io::Write;
        let line = vec![b'x'; 1024 * 1024];
        let mut err = std::io::stderr().lock();
        for _ in 0..mib {
            let _ = err.write_all(&line);
        }
        let _ = err.write_all(b"\n");
        mib
    }

    async fn say(&self, line: String) {
        eprintln!("{line}");
    }

    async fn crash(&self, code: i32) {
        std::process::exit(code);
    }
}

impl Admin for Impl {
    async fn served(&self) -> u64 {
        SERVED.load(Ordering::Relaxed)
    }
}

/// A `TestPlugin` built against an older trait: no `crash` method.
struct Old(TestPluginServer<Impl>);

impl PluginService for Old {
    const SERVICE: &'static str = "TestPlugin";
    const METHODS: &'static [&'static str] = &[
        "/TestPlugin/echo",
        "/TestPlugin/slow",
        "/TestPlugin/count",
        "/TestPlugin/pid",
        "/TestPlugin/spew",
        "/TestPlugin/say",
    ];

    fn register(&self, builder: uds::rpc::ServerBuilder) -> uds::rpc::ServerBuilder {
        // Registers everything, but says it lacks `crash`: what the host
        // checks is the handshake.
        self.0.register(builder)
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "serve".into());
    match mode.as_str() {
        "serve" => uds::plugin::run(TestPluginServer::new(Impl)).await,
        "serve-both" => {
            Serve::new()
                .service(TestPluginServer::new(Impl))
                .service(AdminServer::new(Impl))
                .run()
                .await
        }
        "old" => uds::plugin::run(Old(TestPluginServer::new(Impl))).await,
        "admin-only" => uds::plugin::run(AdminServer::new(Impl)).await,
        "exit-early" => std::process::ExitCode::from(3),
        "stubborn" => {
            let _ = uds::plugin::serve(TestPluginServer::new(Impl)).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            std::process::ExitCode::SUCCESS
        }
        "never" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            std::process::ExitCode::SUCCESS
        }
        "fork" => {
            let me = std::env::current_exe().expect("own path");
            let status = std::process::Command::new(me)
                .arg("serve")
                .status()
                .expect("start the forked plugin");
            std::process::ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1))
        }
        "serve-at" => {
            let path = std::env::args().nth(2).expect("serve-at PATH");
            let served = Serve::new()
                .service(TestPluginServer::new(Impl))
                .service(AdminServer::new(Impl))
                .serve_at(path)
                .await;
            match served {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        other if other.starts_with("crash-on-") => {
            let n: u64 = other["crash-on-".len()..].parse().expect("crash-on-N");
            CRASH_ON.store(n, Ordering::Relaxed);
            uds::plugin::run(TestPluginServer::new(Impl)).await
        }
        other => {
            eprintln!("unknown mode {other:?}");
            std::process::ExitCode::from(64)
        }
    }
}
