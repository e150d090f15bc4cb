//! A host process and its plugin, in one binary.
//!
//! The host starts this same program as a child in plugin mode, handing it a
//! socket path in a private temporary directory. The plugin serves the typed
//! `Plugin` service there (mode 0600, same-user policy); the host connects —
//! checking that the socket is its own user's and that the process listening
//! runs as its user — calls typed methods, follows a server stream of
//! progress reports, and asks the plugin to quit. The plugin finishes the
//! calls in flight, removes its socket and exits 0.
//!
//! Run: `cargo run -p uds-examples --example plugin`

use std::io::BufRead;
use std::sync::Arc;
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
    /// Asks the plugin to exit once the calls in flight are done.
    async fn quit(&self);
}

struct Impl {
    quit: Arc<tokio::sync::Notify>,
}

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

    async fn quit(&self) {
        self.quit.notify_one();
    }
}

async fn plugin_main(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let quit = Arc::new(tokio::sync::Notify::new());
    let server = PluginServer::new(Impl { quit: quit.clone() }).build()?;
    server.serve(uds::net::Listener::bind(path)?);
    println!("ready"); // the host waits for this line
    quit.notified().await;
    let report = server.shutdown(Duration::from_secs(5)).await;
    eprintln!("plugin: stopped ({report:?})");
    Ok(())
}

async fn host_main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("plugin.sock");
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("--plugin")
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line)
    })
    .await??;
    if ready.trim() != "ready" {
        return Err(format!("plugin did not start: {ready:?}").into());
    }

    let plugin = PluginClient::connect(&path).await?;
    println!(
        "host: connected to plugin process {}",
        plugin.rpc().peer_cred()
    );
    let info = plugin.info().await?;
    println!(
        "host: plugin {} {} (pid {})",
        info.name, info.version, info.pid
    );
    println!(
        "host: transform -> {}",
        plugin.transform("hello plugin".into()).await?
    );
    match plugin.transform(String::new()).await {
        Err(uds::CallError::App(e)) => {
            println!("host: transform of nothing -> application error: {e}");
        }
        other => return Err(format!("expected an application error, got {other:?}").into()),
    }
    let mut progress = plugin.run(5).await?;
    while let Some(p) = progress.next().await {
        let p = p?;
        println!("host: progress {}/{}", p.step, p.of);
    }
    plugin.quit().await?;
    let status = tokio::task::spawn_blocking(move || child.wait()).await??;
    println!("host: plugin exited with {status}");
    if !status.success() {
        return Err("plugin failed".into());
    }
    if path.exists() {
        return Err("plugin left its socket behind".into());
    }
    println!("host: done");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--plugin") => plugin_main(args.get(2).ok_or("--plugin needs a socket path")?).await,
        _ => host_main().await,
    }
}
