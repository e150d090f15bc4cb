//! A host that runs the `greeter_plugin` example as its plugin process:
//! spawn, typed calls, a stream, a crash and what the host sees of it, a
//! restart by hand, and a graceful stop. The trait lives in the crate both
//! share (`uds_examples::Greeter`).
//!
//! Run: `cargo build -p uds-examples --example greeter_plugin` once, then
//! `cargo run -p uds-examples --example plugin_host`.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use uds_examples::GreeterClient;

/// The plugin binary: next to this example's own binary.
fn plugin_path() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name("greeter_plugin");
    if !path.exists() {
        return Err(format!(
            "{} is not built: run `cargo build -p uds-examples --example greeter_plugin` first",
            path.display()
        )
        .into());
    }
    Ok(path)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let command = uds::plugin::Command::new(plugin_path()?).name("greeter");

    let plugin = command.spawn::<GreeterClient>().await?;
    println!(
        "host: started plugin {} (pid {})",
        plugin.name(),
        plugin.pid()
    );
    println!("host: {}", plugin.client().greet("world".into()).await?);
    let counted: Vec<u32> = plugin
        .client()
        .count(3)
        .await?
        .map(|n| n.unwrap_or(0))
        .collect()
        .await;
    println!("host: counted {counted:?}");

    // A crash: the call in flight fails at once, and the host learns how
    // the plugin exited.
    let err = plugin.client().crash(3).await.unwrap_err();
    println!("host: call during the crash failed: {err}");
    println!("host: {}", plugin.exited().await);

    // Start a fresh one and stop it gracefully.
    let plugin = command.spawn::<GreeterClient>().await?;
    println!("host: restarted as pid {}", plugin.pid());
    println!("host: {}", plugin.client().greet("again".into()).await?);
    let status = plugin.shutdown(Duration::from_secs(5)).await?;
    println!("host: plugin stopped with {status}");
    Ok(())
}
