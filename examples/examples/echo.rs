//! The raw RPC layer, without a service trait: an echo handler registered
//! by method name, and many concurrent calls over one connection.
//!
//! Run: `cargo run -p uds-examples --example echo`

use std::time::Duration;

use uds::rpc::{Client, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("echo.sock");
    let server = Server::builder()
        .handler("/echo", |_ctx, req| async move { Ok(req) })
        .build()?;
    server.serve(uds::net::Listener::bind(&path)?);

    let client = Client::connect(&path).await?;
    let mut calls = Vec::new();
    for i in 0..100 {
        let c = client.clone();
        calls.push(tokio::spawn(async move {
            c.call("/echo", format!("message {i}")).await
        }));
    }
    let mut ok = 0;
    for (i, call) in calls.into_iter().enumerate() {
        let reply = call.await??;
        if reply == format!("message {i}").as_bytes() {
            ok += 1;
        }
    }
    println!("echo: {ok} of 100 concurrent calls echoed over one connection");
    if ok != 100 {
        return Err("lost replies".into());
    }
    let report = server.shutdown(Duration::from_secs(1)).await;
    println!("echo: server stopped, graceful = {}", report.graceful);
    Ok(())
}
