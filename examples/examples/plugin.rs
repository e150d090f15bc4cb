//! A host process and its plugin, in one binary, on `uds::plugin`.
//!
//! The host starts this same program as a child in plugin mode with
//! `uds::plugin::Command`: the child inherits one end of a socketpair (no
//! socket path), hands back a socket of its own that the host checks is
//! really its child's, and answers a handshake that names every method of
//! the `Plugin` trait. The host calls typed methods, follows a server stream
//! of progress reports, and stops the plugin gracefully: the plugin finishes
//! the calls in flight and exits 0.
//!
//! Run: `cargo run -p uds-examples --example plugin`

use std::time::Duration;

use futures_util::StreamExt;
use uds::{Context, ServerStream};

/// What a plugin says about itself.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Info {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// The plugin's pid.
    pub pid: u32,
}

/// A progress report.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// Step done.
    pub step: u32,
    /// Of how many.
    pub of: u32,
}

/// Why a transformation failed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum TransformError {
    /// The input was empty.
    Empty,
}

impl std::fmt::Display for TransformError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("nothing to transform")
    }
}

/// The API a host expects of its plugins.
#[uds::service]
pub trait Plugin {
    /// Who the plugin is.
    async fn info(&self) -> Info;
    /// Upper-cases `text`; refuses empty input.
    async fn transform(&self, ctx: &Context, text: String) -> Result<String, TransformError>;
    /// Runs `steps` steps of work, reporting each.
    async fn run(&self, steps: u32) -> ServerStream<Progress>;
}

struct Impl;

impl Plugin for Impl {
    async fn info(&self) -> Info {
        Info {
            name: "upper".into(),
            version: "1.0".into(),
            pid: std::process::id(),
        }
    }

    async fn transform(&self, ctx: &Context, text: String) -> Result<String, TransformError> {
        eprintln!(
            "plugin: transform for uid {} (pid {})",
            ctx.peer().uid,
            ctx.peer().pid
        );
        if text.is_empty() {
            return Err(TransformError::Empty);
        }
        Ok(text.to_uppercase())
    }

    async fn run(&self, steps: u32) -> ServerStream<Progress> {
        let (tx, stream) = ServerStream::channel(2);
        tokio::spawn(async move {
            for step in 1..=steps {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if tx.send(Progress { step, of: steps }).await.is_err() {
                    return; // the host stopped listening
                }
            }
        });
        stream
    }
}

async fn host_main() -> Result<(), Box<dyn std::error::Error>> {
    let plugin = uds::plugin::Command::new(std::env::current_exe()?)
        .arg("--plugin")
        .name("upper")
        // Show the plugin's own stderr lines as they are (the default logs them
        // as `tracing` events).
        .stderr(uds::plugin::Output::Inherit)
        .spawn::<PluginClient>()
        .await?;
    println!(
        "host: connected to plugin process {} ({})",
        plugin.pid(),
        plugin.client().rpc().peer_cred()
    );
    let client = plugin.client();
    let info = client.info().await?;
    println!(
        "host: plugin {} {} (pid {})",
        info.name, info.version, info.pid
    );
    println!(
        "host: transform -> {}",
        client.transform("hello plugin".into()).await?
    );
    match client.transform(String::new()).await {
        Err(uds::CallError::App(e)) => {
            println!("host: transform of nothing -> application error: {e}");
        }
        other => return Err(format!("expected an application error, got {other:?}").into()),
    }
    let mut progress = client.run(5).await?;
    while let Some(p) = progress.next().await {
        let p = p?;
        println!("host: progress {}/{}", p.step, p.of);
    }
    let status = plugin.shutdown(Duration::from_secs(5)).await?;
    println!("host: plugin exited with {status}");
    if !status.success() {
        return Err("plugin failed".into());
    }
    println!("host: done");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("--plugin") {
        // The whole plugin side: serve until the host closes or stops us.
        return Ok(uds::plugin::run(PluginServer::new(Impl)).await);
    }
    host_main().await?;
    Ok(std::process::ExitCode::SUCCESS)
}
