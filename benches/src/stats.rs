//! Latency and throughput summaries.

use std::time::Duration;

/// What one row measured at one payload size, over all its rounds.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Round-trip times, in nanoseconds.
    pub latencies_ns: Vec<u64>,
    /// Wall time spent running this row's requests.
    pub wall: Duration,
}

/// Summary of a [`Sample`].
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Requests measured.
    pub requests: usize,
    /// Requests per second (requests / wall time).
    pub rps: f64,
    /// Fastest round trip, µs.
    pub min_us: f64,
    /// Mean round trip, µs.
    pub avg_us: f64,
    /// Median round trip, µs.
    pub p50_us: f64,
    /// 99th percentile round trip, µs.
    pub p99_us: f64,
    /// Slowest round trip, µs.
    pub max_us: f64,
}

impl Sample {
    /// Summarizes the sample (sorting its latencies).
    pub fn summary(&mut self) -> Summary {
        let l = &mut self.latencies_ns;
        l.sort_unstable();
        let n = l.len().max(1);
        let us = |ns: u64| ns as f64 / 1000.0;
        let pct = |p: f64| {
            let i = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
            us(l.get(i).copied().unwrap_or(0))
        };
        let total: u128 = l.iter().map(|&x| u128::from(x)).sum();
        Summary {
            requests: l.len(),
            rps: l.len() as f64 / self.wall.as_secs_f64().max(1e-9),
            min_us: us(l.first().copied().unwrap_or(0)),
            avg_us: total as f64 / n as f64 / 1000.0,
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            max_us: us(l.last().copied().unwrap_or(0)),
        }
    }
}
