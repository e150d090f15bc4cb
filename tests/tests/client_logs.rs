//! A hostile server cannot flood the client's log (issue 10, item 7): the
//! lines its replies trigger are rate-limited, and what is not logged is
//! counted in the next line's `suppressed` field. Its own test binary: the
//! limits are process-wide, and other tests' stray replies would count.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use uds::frame::FrameReader;
use uds::rpc::__wire::Envelope;
use uds::rpc::Client;
use uds_tests::envelope_frame;

/// One log line: its message and its `suppressed` field, if any.
#[derive(Debug, Clone, Default)]
struct Line {
    message: String,
    suppressed: Option<u64>,
    /// Length of the quoted error text.
    err_len: Option<usize>,
}

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "err" {
            self.err_len = Some(value.len());
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "suppressed" {
            self.suppressed = Some(value);
        }
    }
}

/// A subscriber that keeps every event, at every level.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Line>>>);

impl Capture {
    /// The lines whose message contains `what`.
    fn lines(&self, what: &str) -> Vec<Line> {
        let lines = self.0.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.message.contains(what))
            .cloned()
            .collect()
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut line = Line::default();
        event.record(&mut line);
        self.0.lock().unwrap().push(line);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// A server that answers each request with pairs of replies that match no
/// call — one with id 0 (as a Go server's errors), one with an id never
/// used — and then the real reply. It sends pairs for as many milliseconds
/// as the request's data says (at least one pair), and counts them.
fn flooding_server(pairs: Arc<AtomicU64>) -> Client {
    let (a, b) = uds::net::pair().unwrap();
    let (rd, mut wr) = b.into_parts().0.into_split();
    tokio::spawn(async move {
        let mut rd = FrameReader::new(rd);
        let mut stray = Envelope::default();
        stray.err_type = 3;
        stray.err = Bytes::from(vec![b'e'; 1000]);
        let no_id = envelope_frame(&stray);
        stray.id = 4_000_000_000;
        let unknown_id = envelope_frame(&stray);
        let mut batch = Vec::new();
        while let Ok(Some(body)) = rd.read_frame().await {
            let req = Envelope::decode(&body).unwrap();
            let ms: u64 = std::str::from_utf8(&req.data).unwrap().parse().unwrap();
            let until = Instant::now() + Duration::from_millis(ms);
            loop {
                for _ in 0..64 {
                    batch.extend_from_slice(&no_id);
                    batch.extend_from_slice(&unknown_id);
                    pairs.fetch_add(1, Ordering::SeqCst);
                    if ms == 0 {
                        break;
                    }
                }
                wr.write_all(&batch).await.unwrap();
                batch.clear();
                if Instant::now() >= until {
                    break;
                }
                // Thousands a second, not millions: enough to flood a log
                // without taking a loaded machine's cores.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let mut reply = Envelope::default();
            reply.id = req.id;
            reply.data = req.data;
            wr.write_all(&envelope_frame(&reply)).await.unwrap();
        }
    });
    Client::new(a)
}

const NO_ID: &str = "reply without a call id dropped";
const NO_CALL: &str = "reply for no pending call dropped";

#[tokio::test]
async fn a_flood_of_unmatched_replies_logs_a_bounded_number_of_lines() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let pairs = Arc::new(AtomicU64::new(0));
    let client = flooding_server(pairs.clone());
    // A flood of 2.5 s.
    let start = Instant::now();
    assert_eq!(client.call("/x", "2500").await.unwrap(), "2500");
    let took = start.elapsed();
    let flood = pairs.load(Ordering::SeqCst);
    // One line a second at most (and one at once), per kind of line.
    let bound = 2 + took.as_secs() as usize;
    for what in [NO_ID, NO_CALL] {
        let n = capture.lines(what).len();
        eprintln!("{n} lines '{what}' for {flood} replies in {took:?}");
        assert!(
            (2..=bound).contains(&n),
            "{n} lines '{what}' for {flood} replies in {took:?}"
        );
    }
    // A second later, one more of each: logged, with the count of what was
    // not. Every unmatched reply is either logged or counted.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(client.call("/x", "0").await.unwrap(), "0");
    assert_eq!(pairs.load(Ordering::SeqCst), flood + 1);
    for what in [NO_ID, NO_CALL] {
        let lines = capture.lines(what);
        let counted: u64 = lines.iter().map(|l| 1 + l.suppressed.unwrap_or(0)).sum();
        assert_eq!(
            counted,
            flood + 1,
            "'{what}': {} lines, {lines:?}",
            lines.len()
        );
        let last = lines.last().unwrap();
        assert!(last.suppressed.unwrap_or(0) > 0, "{last:?}");
        // The server's 1000-byte error text is quoted cut short.
        for l in &lines {
            assert!(l.err_len.unwrap_or(0) <= 256, "{l:?}");
        }
    }
    assert!(capture.lines(NO_ID).iter().all(|l| l.err_len.is_some()));
    drop(client);
}
