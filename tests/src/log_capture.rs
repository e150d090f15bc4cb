//! A `tracing` subscriber that keeps events in memory, for tests that check
//! what the library logs. Install it once per test process with
//! [`LogCapture::global`]; events of every test then land in it, so filter
//! them by a field of your own test (a pid, a plugin name).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// One event as logged.
#[derive(Debug, Clone)]
pub struct Logged {
    /// The event's target (e.g. `uds::plugin`).
    pub target: String,
    /// Its level.
    pub level: tracing::Level,
    /// Its message.
    pub message: String,
    /// Its other fields, as text.
    pub fields: HashMap<String, String>,
}

/// Most events kept; later ones are counted, not kept.
const KEEP: usize = 100_000;
/// Longest text kept of a message or field; the rest is cut, so that a test
/// measuring memory measures the library's, not the capture's.
const KEEP_TEXT: usize = 1024;

fn cut(mut text: String) -> String {
    if text.len() > KEEP_TEXT {
        let mut end = KEEP_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.shrink_to_fit();
    }
    text
}

/// The in-memory subscriber.
#[derive(Debug, Clone, Default)]
pub struct LogCapture {
    events: Arc<Mutex<Vec<Logged>>>,
    dropped: Arc<AtomicU64>,
    /// Every event seen, kept or not.
    seen: Arc<AtomicU64>,
    /// Whether events are kept (else only counted).
    discard: Arc<std::sync::atomic::AtomicBool>,
}

impl LogCapture {
    /// The process-wide capture, installed as the global default on first use.
    pub fn global() -> LogCapture {
        static GLOBAL: OnceLock<LogCapture> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                let capture = LogCapture::default();
                tracing::subscriber::set_global_default(capture.clone())
                    .expect("no other global subscriber in this test binary");
                capture
            })
            .clone()
    }

    /// Events seen so far, kept or not.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// Stops (or resumes) keeping events: they are still formatted and
    /// counted in [`LogCapture::seen`]. For tests that measure memory.
    pub fn keep(&self, keep: bool) {
        self.discard.store(!keep, Ordering::Relaxed);
    }

    /// Drops the kept events that match `drop` (and the memory they held).
    pub fn forget(&self, drop: impl Fn(&Logged) -> bool) {
        let mut events = self.events.lock().expect("capture lock");
        events.retain(|e| !drop(e));
        events.shrink_to_fit();
    }

    /// How many kept events match `which` (without copying them).
    pub fn count(&self, which: impl Fn(&Logged) -> bool) -> usize {
        self.events
            .lock()
            .expect("capture lock")
            .iter()
            .filter(|e| which(e))
            .count()
    }

    /// The events kept so far that match `keep`.
    pub fn events(&self, keep: impl Fn(&Logged) -> bool) -> Vec<Logged> {
        self.events
            .lock()
            .expect("capture lock")
            .iter()
            .filter(|e| keep(e))
            .cloned()
            .collect()
    }
}

struct Fields<'a>(&'a mut Logged);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let text = cut(format!("{value:?}"));
        if field.name() == "message" {
            self.0.message = text;
        } else {
            self.0.fields.insert(field.name().to_owned(), text);
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.0.message);
        } else {
            self.0
                .fields
                .insert(field.name().to_owned(), value.to_owned());
        }
    }
}

impl tracing::Subscriber for LogCapture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let meta = event.metadata();
        let mut logged = Logged {
            target: meta.target().to_owned(),
            level: *meta.level(),
            message: String::new(),
            fields: HashMap::new(),
        };
        event.record(&mut Fields(&mut logged));
        self.seen.fetch_add(1, Ordering::Relaxed);
        if self.discard.load(Ordering::Relaxed) {
            return;
        }
        let mut events = self.events.lock().expect("capture lock");
        if events.len() < KEEP {
            events.push(logged);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}
