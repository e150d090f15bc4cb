//! An attacking peer process for the server-bounds tests: another pid (and,
//! started as another user, another uid) than the test that runs it. Plain
//! blocking sockets and threads, no client library checks; it prints `ready`
//! once its attack is under way, then a summary line when it ends.
//!
//! `uds-flood frames PATH CONNS KIND MILLIS`: on each of CONNS connections,
//! write frames of KIND (`cancel`: cancellations of calls that do not exist;
//! `bad`: bodies that are not envelopes; `call`: `/echo` calls) as fast as
//! the server reads them for MILLIS ms, reading and dropping every reply.
//! Prints `sent N frames`.
//!
//! `uds-flood slow PATH CONNS CALLS METHOD MILLIS`: on each of CONNS
//! connections, send CALLS requests to METHOD with a deadline in 2100 (the
//! wire's "no deadline"), then count the replies for MILLIS ms. Prints
//! `connected C ok O err1 A err2 B err3 C err4 D closed K` (K: connections
//! the server closed) and the first error text, if any.
//!
//! `uds-flood conns PATH CONNS MILLIS`: open CONNS connections, make one
//! `/echo` call on each, and hold them open for MILLIS ms. Prints
//! `served S closed C failed F`: connections that got their reply, that the
//! server closed unanswered, and that could not connect.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use uds::frame::__wire::FrameDecoder;
use uds::rpc::__wire::Envelope;
use uds_tests::envelope_frame;

/// 2100-01-01 in Unix nanoseconds: beyond the server's "no deadline" horizon.
const FAR: i64 = 4_102_444_800_000_000_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let num = |s: &str| s.parse::<u64>().unwrap_or(0);
    let out = match args[..] {
        ["frames", path, conns, kind, ms] => frames(path, num(conns), kind, num(ms)),
        ["slow", path, conns, calls, method, ms] => {
            slow(path, num(conns), num(calls), method, num(ms))
        }
        ["conns", path, conns, ms] => Ok(conns_flood(path, num(conns), num(ms))),
        _ => Err("usage: uds-flood frames|slow|conns ...".to_owned()),
    };
    match out {
        Ok(line) => println!("{line}"),
        Err(e) => println!("error: {e}"),
    }
}

fn request(id: u32, method: &str, data: &'static [u8]) -> Vec<u8> {
    let mut e = Envelope::default();
    e.id = id;
    e.exp_unix_nano = FAR;
    e.method = Bytes::copy_from_slice(method.as_bytes());
    e.data = Bytes::from_static(data);
    envelope_frame(&e)
}

/// About 64 KiB of frames of one kind.
fn batch(kind: &str, next_id: &mut u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(70 * 1024);
    while out.len() < 64 * 1024 {
        *next_id = next_id.wrapping_add(1).max(1);
        match kind {
            "cancel" => {
                let mut e = Envelope::default();
                e.id = *next_id;
                e.cancel = true;
                out.extend_from_slice(&envelope_frame(&e));
            }
            // A body of 0xff bytes: a truncated varint, never an envelope.
            "bad" => out.extend_from_slice(&[0x06, 0xff, 0xff, 0xff]),
            "call" => out.extend_from_slice(&request(*next_id, "/echo", b"flood")),
            other => return Err(format!("unknown frame kind {other}")),
        }
    }
    Ok(out)
}

fn connect(path: &str) -> Result<UnixStream, String> {
    UnixStream::connect(path).map_err(|e| format!("connect: {e}"))
}

/// Reads and drops everything until EOF or an error.
fn drain(mut s: UnixStream) {
    let mut buf = vec![0u8; 64 * 1024];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}

fn frames(path: &str, conns: u64, kind: &str, ms: u64) -> Result<String, String> {
    let sent = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    let mut id = 0u32;
    let one = batch(kind, &mut id)?;
    let per_batch = {
        let d = FrameDecoder::new(1 << 20);
        let mut b = BytesMut::from(&one[..]);
        let mut n = 0u64;
        while let Ok(Some(_)) = d.decode(&mut b) {
            n += 1;
        }
        n
    };
    let end = Instant::now() + Duration::from_millis(ms);
    for _ in 0..conns {
        let s = connect(path)?;
        let rd = s.try_clone().map_err(|e| e.to_string())?;
        std::thread::spawn(move || drain(rd));
        let sent = sent.clone();
        let kind = kind.to_owned();
        writers.push(std::thread::spawn(move || {
            let mut s = s;
            let mut id = 0u32;
            while Instant::now() < end {
                // Ids differ between batches only for calls, whose replies
                // are dropped anyway; reuse makes no difference to the load.
                let Ok(b) = batch(&kind, &mut id) else { return };
                if s.write_all(&b).is_err() {
                    return;
                }
                sent.fetch_add(per_batch, Ordering::Relaxed);
            }
            let _ = s.shutdown(std::net::Shutdown::Both);
        }));
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    for w in writers {
        let _ = w.join();
    }
    Ok(format!("sent {} frames", sent.load(Ordering::Relaxed)))
}

/// Counts of replies by outcome.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    err: [AtomicU64; 4],
    closed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

fn slow(path: &str, conns: u64, calls: u64, method: &str, ms: u64) -> Result<String, String> {
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    let mut connected = 0u64;
    let mut sockets = Vec::new();
    for _ in 0..conns {
        let Ok(s) = connect(path) else { continue };
        connected += 1;
        let mut all = Vec::new();
        for id in 1..=calls {
            all.extend_from_slice(&request(id as u32, method, b"slow"));
        }
        let rd = s.try_clone().map_err(|e| e.to_string())?;
        let (tally, stop) = (tally.clone(), stop.clone());
        readers.push(std::thread::spawn(move || read_replies(rd, &tally, &stop)));
        let mut w = s.try_clone().map_err(|e| e.to_string())?;
        // Written from a thread of its own: the server may stop reading.
        std::thread::spawn(move || {
            let _ = w.write_all(&all);
        });
        sockets.push(s);
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_millis(ms));
    stop.store(true, Ordering::SeqCst);
    for s in &sockets {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    for r in readers {
        let _ = r.join();
    }
    let t = &tally;
    let load = |a: &AtomicU64| a.load(Ordering::SeqCst);
    let first = t.first_error.lock().map_or(None, |g| g.clone());
    Ok(format!(
        "connected {connected} ok {} err1 {} err2 {} err3 {} err4 {} closed {} first_error {:?}",
        load(&t.ok),
        load(&t.err[0]),
        load(&t.err[1]),
        load(&t.err[2]),
        load(&t.err[3]),
        load(&t.closed),
        first.unwrap_or_default(),
    ))
}

fn read_replies(mut s: UnixStream, tally: &Tally, stop: &AtomicBool) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let decoder = FrameDecoder::new(16 << 20);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while let Ok(Some(body)) = decoder.decode(&mut buf) {
            let Ok(env) = Envelope::decode(&body) else {
                continue;
            };
            match env.err_type {
                0 => tally.ok.fetch_add(1, Ordering::SeqCst),
                n @ 1..=4 => tally.err[n as usize - 1].fetch_add(1, Ordering::SeqCst),
                _ => 0,
            };
            if env.err_type != 0
                && let Ok(mut first) = tally.first_error.lock()
            {
                first.get_or_insert_with(|| env.err_text());
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => {
                if !stop.load(Ordering::SeqCst) {
                    tally.closed.fetch_add(1, Ordering::SeqCst);
                }
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
            }
            Err(_) => {
                if !stop.load(Ordering::SeqCst) {
                    tally.closed.fetch_add(1, Ordering::SeqCst);
                }
                return;
            }
        }
    }
}

fn conns_flood(path: &str, conns: u64, ms: u64) -> String {
    let (mut served, mut closed, mut failed) = (0u64, 0u64, 0u64);
    let mut open = Vec::new();
    for id in 1..=conns {
        let Ok(mut s) = UnixStream::connect(path) else {
            failed += 1;
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        if s.write_all(&request(id as u32, "/echo", b"hi")).is_err() {
            closed += 1;
            continue;
        }
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(n) if n > 0 => served += 1,
            _ => closed += 1,
        }
        open.push(s);
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_millis(ms));
    drop(open);
    format!("served {served} closed {closed} failed {failed}")
}
