//! Starts an authenticated server on a Unix socket and talks to it.
//!
//! The server learns each caller's pid/uid/gid from the kernel and applies the
//! default policy (same user only); the client checks that the socket file is
//! ours and that the process listening on it runs as us. Messages travel in
//! the Go-compatible chunk framing.
//!
//! Run: `cargo run -p uds-examples --example hello`

use tokio::io::split;
use uds::frame::{FrameReader, FrameWriter};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("hello.sock");
    let listener = uds::net::Listener::bind(&path)?;
    println!("server: listening on {}", path.display());

    let server = tokio::spawn(async move {
        let conn = listener.accept().await?;
        let peer = conn.peer_cred().clone();
        println!("server: accepted {peer}");
        let (rd, wr) = split(conn);
        let (mut rd, mut wr) = (FrameReader::new(rd), FrameWriter::new(wr));
        while let Some(msg) = rd.read_frame().await? {
            let reply = format!(
                "hello {}, you are uid {} (pid {})",
                String::from_utf8_lossy(&msg),
                peer.uid,
                peer.pid
            );
            wr.write_frame(reply.as_bytes()).await?;
        }
        println!("server: client closed; {:?}", listener.stats());
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    });

    let conn = uds::net::connect(&path).await?;
    println!("client: connected; server is {}", conn.peer_cred());
    let (rd, wr) = split(conn);
    let (mut rd, mut wr) = (FrameReader::new(rd), FrameWriter::new(wr));
    for name in ["plugin", "helper"] {
        wr.write_frame(name.as_bytes()).await?;
        let reply = rd.read_frame().await?.ok_or("server closed early")?;
        println!("client: {}", String::from_utf8_lossy(&reply));
    }
    drop(wr);
    drop(rd);
    server.await?.map_err(|e| e.to_string())?;
    Ok(())
}
