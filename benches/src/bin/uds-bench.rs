//! `uds-bench`: uds against gRPC (tonic) and a raw floor; see the crate docs.
//!
//! ```text
//! cargo run --release -p uds-benches --bin uds-bench -- \
//!     [--users 16] [--requests 10000] [--big-requests 2000] \
//!     [--sizes 1024,10240,102400,1024000] [--rows floor,uds-raw,uds-service,tonic,tonic-tuned] \
//!     [--rounds 5] [--alloc-requests 2000] [--json]
//! ```

// Reported figures: float conversions of counts and times lose nothing that matters.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use uds_benches::rows::{BoxError, Fixture, Row};
use uds_benches::stats::{Sample, Summary};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged and only
// counts them.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Config {
    users: usize,
    requests: usize,
    big_requests: usize,
    sizes: Vec<usize>,
    rows: Vec<Row>,
    rounds: usize,
    alloc_requests: usize,
    json: bool,
}

const USAGE: &str = "usage: uds-bench [--users N] [--requests N] [--big-requests N] [--sizes A,B,..] \
[--rows floor,uds-raw,uds-service,tonic,tonic-tuned] [--rounds N] [--alloc-requests N] [--json]";

fn parse_args() -> Result<Config, String> {
    let mut c = Config {
        users: 16,
        requests: 10_000,
        big_requests: 2_000,
        sizes: vec![1024, 10_240, 102_400, 1_024_000],
        rows: Row::ALL.to_vec(),
        rounds: 5,
        alloc_requests: 2_000,
        json: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{a}: {e}"));
        match a.as_str() {
            "--users" => c.users = num(value()?)?.max(1),
            "--requests" => c.requests = num(value()?)?,
            "--big-requests" => c.big_requests = num(value()?)?,
            "--rounds" => c.rounds = num(value()?)?.max(1),
            "--alloc-requests" => c.alloc_requests = num(value()?)?,
            "--sizes" => {
                c.sizes = value()?
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse::<usize>()
                            .map_err(|e| format!("--sizes: {e}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--rows" => {
                c.rows = value()?
                    .split(',')
                    .map(|s| {
                        Row::parse(s.trim()).ok_or_else(|| format!("unknown row {s}\n{USAGE}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--json" => c.json = true,
            "--help" | "-h" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(c)
}

/// Requests at `size`: fewer for payloads of a megabyte or more, to bound
/// the run time (said in the report).
fn requests_for(c: &Config, size: usize) -> usize {
    if size >= 1_000_000 {
        c.big_requests
    } else {
        c.requests
    }
}

/// Runs `n` echo requests of `payload` spread over `users` concurrent users.
async fn run_batch(
    fx: &Arc<Fixture>,
    users: usize,
    n: usize,
    payload: &Bytes,
    into: &mut Sample,
) -> Result<(), BoxError> {
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(users);
    for u in 0..users {
        let per_user = n / users + usize::from(u < n % users);
        let (fx, payload) = (fx.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_user);
            for _ in 0..per_user {
                let t = Instant::now();
                let got = fx.echo(u, &payload).await?;
                lat.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
                if got != payload.len() {
                    return Err::<_, BoxError>(
                        format!("echoed {got} of {} bytes", payload.len()).into(),
                    );
                }
            }
            Ok(lat)
        }));
    }
    for t in tasks {
        into.latencies_ns.extend(t.await??);
    }
    into.wall += start.elapsed();
    Ok(())
}

/// Heap allocations and bytes per request with one user, client and server
/// together, after a warm-up.
async fn alloc_cost(fx: &Arc<Fixture>, n: usize, payload: &Bytes) -> Result<(f64, f64), BoxError> {
    for _ in 0..n.min(500) {
        fx.echo(0, payload).await?;
    }
    let (a0, b0) = (
        ALLOCS.load(Ordering::Relaxed),
        ALLOC_BYTES.load(Ordering::Relaxed),
    );
    for _ in 0..n {
        fx.echo(0, payload).await?;
    }
    let (a1, b1) = (
        ALLOCS.load(Ordering::Relaxed),
        ALLOC_BYTES.load(Ordering::Relaxed),
    );
    let n = n.max(1) as f64;
    Ok(((a1 - a0) as f64 / n, (b1 - b0) as f64 / n))
}

struct Result1 {
    row: Row,
    size: usize,
    summary: Summary,
    allocs: f64,
    alloc_bytes: f64,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let c = match parse_args() {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    let dir = tempfile::tempdir()?;
    let mut fixtures = Vec::new();
    for &row in &c.rows {
        fixtures.push((
            row,
            Arc::new(Fixture::start(row, c.users, dir.path()).await?),
        ));
    }
    let mut results = Vec::new();
    for &size in &c.sizes {
        let payload = Bytes::from(vec![0xa5u8; size]);
        let total = requests_for(&c, size);
        let per_round = (total / c.rounds).max(1);
        let mut samples: Vec<Sample> = vec![Sample::default(); fixtures.len()];
        // Warm-up, then rounds that visit every row in turn (rotating the
        // order each round) so that drift hits all rows alike.
        for (_, fx) in &fixtures {
            run_batch(fx, c.users, c.users * 4, &payload, &mut Sample::default()).await?;
        }
        for round in 0..c.rounds {
            for k in 0..fixtures.len() {
                let i = (k + round) % fixtures.len();
                run_batch(
                    &fixtures[i].1,
                    c.users,
                    per_round,
                    &payload,
                    &mut samples[i],
                )
                .await?;
            }
        }
        for ((row, fx), mut sample) in fixtures.iter().zip(samples) {
            let (allocs, alloc_bytes) =
                alloc_cost(fx, c.alloc_requests.min(total.max(1)), &payload).await?;
            results.push(Result1 {
                row: *row,
                size,
                summary: sample.summary(),
                allocs,
                alloc_bytes,
            });
        }
        eprintln!("size {size}: done");
    }
    for (_, fx) in fixtures {
        if let Ok(fx) = Arc::try_unwrap(fx) {
            fx.stop().await;
        }
    }
    report(&c, &results);
    Ok(())
}

fn report(c: &Config, results: &[Result1]) {
    let floor = |size: usize| {
        results
            .iter()
            .find(|r| r.row == Row::Floor && r.size == size)
            .map(|r| r.summary.rps)
    };
    let tonic = |size: usize| {
        results
            .iter()
            .find(|r| r.row == Row::Tonic && r.size == size)
            .map(|r| r.summary.rps)
    };
    if c.json {
        let rows: Vec<String> = results
            .iter()
            .map(|r| {
                let s = &r.summary;
                format!(
                    "{{\"row\":\"{}\",\"size\":{},\"requests\":{},\"rps\":{:.1},\"min_us\":{:.1},\"avg_us\":{:.1},\"p50_us\":{:.1},\"p99_us\":{:.1},\"max_us\":{:.1},\"vs_floor\":{},\"vs_tonic\":{},\"allocs_per_req\":{:.2},\"bytes_per_req\":{:.0}}}",
                    r.row.name(), r.size, s.requests, s.rps, s.min_us, s.avg_us, s.p50_us, s.p99_us, s.max_us,
                    floor(r.size).map_or("null".into(), |f| format!("{:.3}", s.rps / f)),
                    tonic(r.size).map_or("null".into(), |t| format!("{:.3}", s.rps / t)),
                    r.allocs, r.alloc_bytes
                )
            })
            .collect();
        println!(
            "{{\"users\":{},\"rounds\":{},\"results\":[{}]}}",
            c.users,
            c.rounds,
            rows.join(",")
        );
        return;
    }
    println!(
        "users {}, {} requests per size ({} at >= 1 MB), {} interleaved rounds; allocations with 1 user, client + server",
        c.users, c.requests, c.big_requests, c.rounds
    );
    println!(
        "| row | size | requests | rps | min µs | avg µs | p50 µs | p99 µs | max µs | × floor | × tonic | allocs/req | bytes/req |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let s = &r.summary;
        let ratio =
            |base: Option<f64>| base.map_or("-".to_owned(), |b| format!("{:.2}", s.rps / b));
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {:.1} | {:.0} |",
            r.row.name(),
            r.size,
            s.requests,
            s.rps,
            s.min_us,
            s.avg_us,
            s.p50_us,
            s.p99_us,
            s.max_us,
            ratio(floor(r.size)),
            ratio(tonic(r.size)),
            r.allocs,
            r.alloc_bytes
        );
    }
}
