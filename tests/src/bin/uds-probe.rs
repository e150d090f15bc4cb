//! A small peer process for the security tests; they run it as another user.
//!
//! `uds-probe talk PATH`: connect without client checks, send a frame, and
//! print `served` if a reply comes back, `closed` if the server hung up
//! unread, or `error: ...`.
//! `uds-probe hammer PATH MILLIS`: connect in a loop for MILLIS ms; print how
//! many connects succeeded.
//! `uds-probe serve PATH`: serve as this user (any peer allowed, mode 0666),
//! print `ready`, and answer one frame per connection until killed.
//! `uds-probe talk-abstract NAME`: like `talk`, for an abstract socket.
//! `uds-probe call PATH METHOD MILLIS`: connect without client checks, make
//! one RPC call with that timeout, and print `ok LEN` or `error: ...`
//! (prints `calling` first).
//! `uds-probe rpc-serve PATH`: run an RPC server (mode 0600, same user) with
//! `/echo` and `/slow` (sleeps 60 s; prints `started ID` when it begins),
//! print `ready`, and serve until killed.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["talk", path] => talk(tokio::net::UnixStream::connect(path).await).await,
        #[cfg(target_os = "linux")]
        ["talk-abstract", name] => talk(connect_abstract(name)).await,
        ["hammer", path, ms] => hammer(path, ms.parse().unwrap_or(500)).await,
        ["serve", path] => serve(path).await,
        ["call", path, method, ms] => call(path, method, ms.parse().unwrap_or(5000)).await,
        ["rpc-serve", path] => rpc_serve(path).await,
        _ => {
            "error: usage: uds-probe talk|hammer|serve|talk-abstract|call|rpc-serve ...".to_owned()
        }
    };
    println!("{out}");
}

#[cfg(target_os = "linux")]
fn connect_abstract(name: &str) -> std::io::Result<tokio::net::UnixStream> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    let s = std::os::unix::net::UnixStream::connect_addr(&addr)?;
    s.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(s)
}

async fn talk(stream: std::io::Result<tokio::net::UnixStream>) -> String {
    let mut s = match stream {
        Ok(s) => s,
        Err(e) => return format!("error: connect: {e}"),
    };
    // A one-byte frame: header 0x02, body "x".
    if let Err(e) = s.write_all(&[0x02, b'x']).await {
        return format!("closed (write: {e})");
    }
    let mut buf = [0u8; 16];
    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
        Ok(Ok(0)) => "closed".to_owned(),
        Ok(Ok(_)) => "served".to_owned(),
        Ok(Err(e)) => format!("closed ({e})"),
        Err(_) => "error: no answer in 5s".to_owned(),
    }
}

async fn hammer(path: &str, ms: u64) -> String {
    let end = Instant::now() + Duration::from_millis(ms);
    let mut ok = 0u64;
    let mut tries = 0u64;
    while Instant::now() < end {
        tries += 1;
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            ok += 1;
        }
        tokio::task::yield_now().await;
    }
    format!("{ok} of {tries}")
}

async fn serve(path: &str) -> String {
    let listener = match uds::net::Listener::builder(path)
        .mode(0o666)
        .policy(uds::auth::Policy::allow_all())
        .bind()
    {
        Ok(l) => l,
        Err(e) => return format!("error: {e}"),
    };
    println!("ready");
    loop {
        let Ok(mut conn) = listener.accept().await else {
            return "error: accept".to_owned();
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 16];
            if conn.read(&mut buf).await.is_ok() {
                let _ = conn.write_all(&[0x02, b'y']).await;
            }
        });
    }
}

async fn call(path: &str, method: &str, ms: u64) -> String {
    // No client-side checks: the test decides who talks to whom.
    let conn = match std::os::unix::net::UnixStream::connect(path) {
        Ok(s) => match uds::net::Conn::from_std(s) {
            Ok(c) => c,
            Err(e) => return format!("error: {e}"),
        },
        Err(e) => return format!("error: connect: {e}"),
    };
    let client = uds::rpc::Client::builder()
        .timeout(Duration::from_millis(ms))
        .build(conn);
    println!("calling");
    match client.call(method, "from the probe").await {
        Ok(reply) => format!("ok {}", reply.len()),
        Err(e) => format!("error: {e:?}"),
    }
}

async fn rpc_serve(path: &str) -> String {
    let server = uds::rpc::Server::builder()
        .handler("/echo", |_, req| async move { Ok(req) })
        .handler("/slow", |ctx, _| async move {
            println!("started {}", ctx.call_id());
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(bytes::Bytes::new())
        })
        .build();
    let server = match server {
        Ok(s) => s,
        Err(e) => return format!("error: {e}"),
    };
    match uds::net::Listener::bind(path) {
        Ok(l) => server.serve(l),
        Err(e) => return format!("error: {e}"),
    }
    println!("ready");
    std::future::pending::<String>().await
}
