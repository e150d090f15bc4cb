//! Rate limiting for log lines a peer can trigger.
//!
//! A peer that can make the process log once per frame can fill the disk or
//! drown the lines that matter. Each such line goes through a
//! [`RateLimited`]: at most one line per interval, and the line that does get
//! through says how many were suppressed since the last one.
//!
//! ```ignore
//! static BAD: RateLimited = RateLimited::new(Duration::from_secs(1));
//! if let Some(suppressed) = BAD.allow() {
//!     tracing::warn!(suppressed, "bad frame from a peer");
//! }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

/// Most bytes of a peer's text quoted in a log line.
pub(crate) const MAX_LOGGED_TEXT: usize = 256;

/// `s` cut to at most `max` bytes, at a character boundary: what a log line
/// quotes of a peer's text.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
use std::time::{Duration, Instant};

/// Lets at most one event through per interval and counts the others.
/// Lock-free; share it by reference (e.g. one per kind of log line in a
/// server, or a `static`).
#[derive(Debug)]
pub(crate) struct RateLimited {
    interval_ms: u64,
    /// Time origin, set by the first call.
    origin: std::sync::OnceLock<Instant>,
    /// Milliseconds after `origin` before which no event passes; 0 before
    /// the first event.
    next_ms: AtomicU64,
    /// Events refused since the last one let through.
    suppressed: AtomicU64,
}

impl RateLimited {
    /// A limiter letting one event through per `interval` (at least 1 ms).
    pub(crate) const fn new(interval: Duration) -> Self {
        let ms = interval.as_millis();
        let interval_ms = if ms == 0 {
            1
        } else if ms > u64::MAX as u128 {
            u64::MAX
        } else {
            ms as u64
        };
        RateLimited {
            interval_ms,
            origin: std::sync::OnceLock::new(),
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether this event may be logged: `Some(n)` with the number of events
    /// suppressed since the last one allowed, or `None` (the event is
    /// counted as suppressed).
    pub(crate) fn allow(&self) -> Option<u64> {
        let origin = *self.origin.get_or_init(Instant::now);
        // +1 so that the very first event (next_ms 0) always passes.
        let now = u64::try_from(origin.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let next = self.next_ms.load(Ordering::Relaxed);
        if now < next
            || self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.interval_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_interval_and_a_count_of_the_rest() {
        let limit = RateLimited::new(Duration::from_secs(3600));
        assert_eq!(limit.allow(), Some(0));
        for _ in 0..1000 {
            assert_eq!(limit.allow(), None);
        }
        // Let the next one through as if the interval had passed.
        limit.next_ms.store(0, Ordering::Relaxed);
        assert_eq!(limit.allow(), Some(1000));
        assert_eq!(limit.allow(), None);
    }

    #[test]
    fn a_short_interval_lets_events_through_again() {
        let limit = RateLimited::new(Duration::from_millis(1));
        assert_eq!(limit.allow(), Some(0));
        std::thread::sleep(Duration::from_millis(5));
        assert!(limit.allow().is_some());
    }

    #[test]
    fn threads_racing_let_one_through() {
        let limit = std::sync::Arc::new(RateLimited::new(Duration::from_secs(3600)));
        let passed: usize = (0..4)
            .map(|_| {
                let l = limit.clone();
                std::thread::spawn(move || (0..1000).filter(|_| l.allow().is_some()).count())
            })
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(passed, 1);
        limit.next_ms.store(0, Ordering::Relaxed);
        assert_eq!(limit.allow(), Some(3999));
    }
}
