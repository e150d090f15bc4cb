//! `uds-bench`: uds against tarpc, gRPC (tonic) and the raw floors; see the
//! crate docs.
//!
//! ```text
//! cargo run --release -p uds-benches --bin uds-bench -- \
//!     [--users 16] [--requests 10000] [--big-requests 2000] \
//!     [--sizes 1024,10240,102400,1024000] \
//!     [--rows floor,floor-std,uds-raw,uds-service,tarpc,tonic,tonic-tuned,\
//!             stream-floor,stream-floor-per-item,stream-uds,stream-uds-w4096,\
//!             stream-tonic,stream-tonic-tuned] \
//!     [--stream-sizes 1024,102400] [--stream-items N | N1,N2,..] [--stream-window 16] \
//!     [--passes 3] [--rounds 5] [--alloc-requests 2000] [--json FILE] [--compare OLD.json]
//! ```
//!
//! Unary (echo) table: each pass measures every row at every size, rows
//! interleaved round by round; a cell's figures are the medians over the
//! passes, and its ratios the medians of the per-pass ratios (to the faster
//! of the two floors in that pass, to tarpc, to tonic).
//!
//! Streaming table (the `stream-*` rows, see `uds_benches::streaming`),
//! after the unary one: each pass streams, for each item size and each
//! direction (upload: client→server, download: server→client), `N` items
//! over one connection and one stream with every streaming row in turn
//! (the order rotated each pass, after a short warm-up), timed from the
//! first send to the receiver having every item. `--stream-items` gives `N`
//! (one count for every size, or one per size); by default about 4 GB of
//! payload, 1 000 to 1 000 000 items (1 000 000 at 1 KiB, 39 062 at
//! 100 KiB). `--stream-window` is the `stream-uds` client's window for
//! downloads (the uds default, 16, unless set; `stream-uds-w4096` always
//! asks for 4096; uploads use the server's window, 16). Figures: items/s
//! and MB/s (10^6 payload bytes), medians over the passes; ratios: medians
//! of the per-pass ratios to `stream-floor` in the same direction and to
//! `stream-tonic`; allocations per item counted over the timed runs, client
//! and server together.
//!
//! With `--rows` naming only unary rows the streaming table is skipped, and
//! with only `stream-*` rows the unary one; by default both run.

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
use uds_benches::streaming::{Direction, StreamFixture, StreamRow};

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
    stream_rows: Vec<StreamRow>,
    stream_sizes: Vec<usize>,
    /// Empty: [`default_stream_items`]; one: for every size; else per size.
    stream_items: Vec<usize>,
    stream_window: u32,
    passes: usize,
    rounds: usize,
    alloc_requests: usize,
    json: Option<String>,
    compare: Option<String>,
}

const USAGE: &str =
    "usage: uds-bench [--users N] [--requests N] [--big-requests N] [--sizes A,B,..] \
[--rows floor,floor-std,uds-raw,uds-service,tarpc,tonic,tonic-tuned,\
stream-floor,stream-floor-per-item,stream-uds,stream-uds-w4096,stream-tonic,stream-tonic-tuned] \
[--stream-sizes A,B,..] [--stream-items N|N1,N2,..] [--stream-window N] [--passes N] [--rounds N] \
[--alloc-requests N] [--json FILE] [--compare OLD.json]
(the stream-* rows make the streaming table, run after the unary one; both by default)";

/// Parses a comma-separated list of counts.
fn list(flag: &str, v: &str) -> Result<Vec<usize>, String> {
    v.split(',')
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .map_err(|e| format!("{flag}: {e}"))
        })
        .collect()
}

fn parse_args() -> Result<Config, String> {
    let mut c = Config {
        users: 16,
        requests: 10_000,
        big_requests: 2_000,
        sizes: vec![1024, 10_240, 102_400, 1_024_000],
        rows: Row::ALL.to_vec(),
        stream_rows: StreamRow::ALL.to_vec(),
        stream_sizes: vec![1024, 102_400],
        stream_items: Vec::new(),
        stream_window: uds::rpc::DEFAULT_STREAM_WINDOW,
        passes: 3,
        rounds: 5,
        alloc_requests: 2_000,
        json: None,
        compare: None,
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
            "--passes" => c.passes = num(value()?)?.max(1),
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
                c.rows.clear();
                c.stream_rows.clear();
                for s in value()?.split(',').map(str::trim) {
                    if let Some(r) = Row::parse(s) {
                        c.rows.push(r);
                    } else if let Some(r) = StreamRow::parse(s) {
                        c.stream_rows.push(r);
                    } else {
                        return Err(format!("unknown row {s}\n{USAGE}"));
                    }
                }
            }
            "--stream-sizes" => c.stream_sizes = list("--stream-sizes", &value()?)?,
            "--stream-items" => c.stream_items = list("--stream-items", &value()?)?,
            "--stream-window" => {
                c.stream_window = u32::try_from(num(value()?)?)
                    .map_err(|e| format!("--stream-window: {e}"))?
                    .clamp(1, 4096);
            }
            "--json" => c.json = Some(value()?),
            "--compare" => c.compare = Some(value()?),
            "--help" | "-h" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if c.stream_items.len() > 1 && c.stream_items.len() != c.stream_sizes.len() {
        return Err(format!(
            "--stream-items: {} counts for {} stream sizes\n{USAGE}",
            c.stream_items.len(),
            c.stream_sizes.len()
        ));
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
        if let Some(floor) = fx.blocking() {
            // Blocking calls: each user on a thread of its own.
            tasks.push(tokio::task::spawn_blocking(move || {
                let mut lat = Vec::with_capacity(per_user);
                for _ in 0..per_user {
                    let t = Instant::now();
                    let got = floor.echo(u, &payload)?;
                    lat.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
                    check_len(got, payload.len())?;
                }
                Ok::<_, BoxError>(lat)
            }));
            continue;
        }
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_user);
            for _ in 0..per_user {
                let t = Instant::now();
                let got = fx.echo(u, &payload).await?;
                lat.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
                check_len(got, payload.len())?;
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

fn check_len(got: usize, want: usize) -> Result<(), BoxError> {
    if got == want {
        Ok(())
    } else {
        Err(format!("echoed {got} of {want} bytes").into())
    }
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

/// What one row measured at one size in one pass.
struct Measured {
    row: Row,
    size: usize,
    summary: Summary,
}

/// One table cell: a row at a size, over every pass.
struct Cell {
    row: Row,
    size: usize,
    requests: usize,
    rps: Vec<f64>,
    p50_us: Vec<f64>,
    p99_us: Vec<f64>,
    vs_floor: Vec<f64>,
    vs_tarpc: Vec<f64>,
    vs_tonic: Vec<f64>,
    allocs: f64,
    alloc_bytes: f64,
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    })
}

fn range(v: &[f64]) -> Option<(f64, f64)> {
    let lo = v.iter().copied().reduce(f64::min)?;
    let hi = v.iter().copied().reduce(f64::max)?;
    Some((lo, hi))
}

/// One pass: every size, rows interleaved round by round.
async fn run_pass(c: &Config, fixtures: &[(Row, Arc<Fixture>)]) -> Result<Vec<Measured>, BoxError> {
    let mut out = Vec::new();
    for &size in &c.sizes {
        let payload = Bytes::from(vec![0xa5u8; size]);
        let total = requests_for(c, size);
        let per_round = (total / c.rounds).max(1);
        let mut samples: Vec<Sample> = vec![Sample::default(); fixtures.len()];
        // Warm-up, then rounds that visit every row in turn (rotating the
        // order each round) so that drift hits all rows alike.
        for (_, fx) in fixtures {
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
        for ((row, _), mut sample) in fixtures.iter().zip(samples) {
            out.push(Measured {
                row: *row,
                size,
                summary: sample.summary(),
            });
        }
        eprintln!("size {size}: done");
    }
    Ok(out)
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
    let mut cells = Vec::new();
    if !c.rows.is_empty() {
        cells = run_unary(&c, dir.path()).await?;
    }
    let mut stream_cells = Vec::new();
    if !c.stream_rows.is_empty() {
        stream_cells = run_streaming(&c, dir.path()).await?;
    }
    let mut table = to_json(&c, &cells);
    table["stream_items"] = serde_json::json!(
        c.stream_sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| stream_items_for(&c, i, size))
            .collect::<Vec<_>>()
    );
    table["stream_window"] = serde_json::json!(c.stream_window);
    table["stream_cells"] = stream_json(&stream_cells);
    if let Some(path) = &c.json {
        std::fs::write(path, serde_json::to_string_pretty(&table)?)?;
        eprintln!("wrote {path}");
    }
    if !c.rows.is_empty() {
        report(&c, &cells);
    }
    if !c.stream_rows.is_empty() {
        if !c.rows.is_empty() {
            println!();
        }
        stream_report(&c, &stream_cells);
    }
    if let Some(old) = &c.compare {
        let old: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(old)?)?;
        if !c.rows.is_empty() {
            compare(&old, &table);
        }
        if !c.stream_rows.is_empty() {
            stream_compare(&old, &table);
        }
    }
    Ok(())
}

/// The unary (echo) benchmark: every pass, then the allocation counts.
async fn run_unary(c: &Config, dir: &std::path::Path) -> Result<Vec<Cell>, BoxError> {
    let mut fixtures = Vec::new();
    for &row in &c.rows {
        fixtures.push((row, Arc::new(Fixture::start(row, c.users, dir).await?)));
    }
    let mut passes = Vec::new();
    for pass in 0..c.passes {
        eprintln!("pass {} of {}", pass + 1, c.passes);
        passes.push(run_pass(c, &fixtures).await?);
    }
    let mut cells = Vec::new();
    for &size in &c.sizes {
        let payload = Bytes::from(vec![0xa5u8; size]);
        for (row, fx) in &fixtures {
            let total = requests_for(c, size);
            let (allocs, alloc_bytes) =
                alloc_cost(fx, c.alloc_requests.min(total.max(1)), &payload).await?;
            cells.push(cell(*row, size, &passes, allocs, alloc_bytes));
        }
    }
    for (_, fx) in fixtures {
        if let Ok(fx) = Arc::try_unwrap(fx) {
            fx.stop().await;
        }
    }
    Ok(cells)
}

/// Items per streaming cell by default: about 4 GB of payload, between
/// 1 000 and 1 000 000 items (1 KiB: 1 000 000; 100 KiB: 39 062).
fn default_stream_items(size: usize) -> usize {
    (4_000_000_000 / size.max(1)).clamp(1_000, 1_000_000)
}

/// Items per streaming cell at the `i`th stream size, `size`.
fn stream_items_for(c: &Config, i: usize, size: usize) -> usize {
    match c.stream_items.as_slice() {
        [] => default_stream_items(size),
        [n] => *n,
        many => many[i],
    }
    .max(1)
}

/// What one streaming row measured in one direction at one size in one pass.
struct StreamMeasured {
    row: StreamRow,
    dir: Direction,
    size: usize,
    items: usize,
    secs: f64,
    allocs: f64,
}

/// One streaming table cell, over every pass.
struct StreamCell {
    row: StreamRow,
    dir: Direction,
    size: usize,
    items: usize,
    items_per_s: Vec<f64>,
    vs_floor: Vec<f64>,
    vs_tonic: Vec<f64>,
    allocs: Vec<f64>,
}

/// The streaming benchmark: every pass, then its cells.
async fn run_streaming(c: &Config, dir: &std::path::Path) -> Result<Vec<StreamCell>, BoxError> {
    let mut fixtures = Vec::new();
    for &row in &c.stream_rows {
        fixtures.push((row, StreamFixture::start(row, dir, c.stream_window).await?));
    }
    let mut passes = Vec::new();
    for pass in 0..c.passes {
        eprintln!("streaming pass {} of {}", pass + 1, c.passes);
        passes.push(run_stream_pass(c, &fixtures, pass).await?);
    }
    let mut cells = Vec::new();
    for &size in &c.stream_sizes {
        for dir in Direction::ALL {
            for &(row, _) in &fixtures {
                cells.push(stream_cell(row, dir, size, &passes));
            }
        }
    }
    for (_, fx) in fixtures {
        fx.stop().await;
    }
    Ok(cells)
}

/// One streaming pass: every size and direction, a short warm-up, then
/// every row in turn, the order rotated by `pass`.
async fn run_stream_pass(
    c: &Config,
    fixtures: &[(StreamRow, StreamFixture)],
    pass: usize,
) -> Result<Vec<StreamMeasured>, BoxError> {
    let mut out = Vec::new();
    for (i, &size) in c.stream_sizes.iter().enumerate() {
        let item = Bytes::from(vec![0xa5u8; size]);
        let n = stream_items_for(c, i, size);
        for dir in Direction::ALL {
            for (_, fx) in fixtures {
                fx.run(dir, &item, (n / 50).max(10)).await?;
            }
            for k in 0..fixtures.len() {
                let (row, fx) = &fixtures[(k + pass) % fixtures.len()];
                let a0 = ALLOCS.load(Ordering::Relaxed);
                let took = fx.run(dir, &item, n).await?;
                let a1 = ALLOCS.load(Ordering::Relaxed);
                out.push(StreamMeasured {
                    row: *row,
                    dir,
                    size,
                    items: n,
                    secs: took.as_secs_f64().max(1e-9),
                    allocs: (a1 - a0) as f64 / n as f64,
                });
            }
            eprintln!("stream size {size} {}: done", dir.name());
        }
    }
    Ok(out)
}

/// The cell of `row` in `dir`ection at `size`, from every pass.
fn stream_cell(
    row: StreamRow,
    dir: Direction,
    size: usize,
    passes: &[Vec<StreamMeasured>],
) -> StreamCell {
    let mut c = StreamCell {
        row,
        dir,
        size,
        items: 0,
        items_per_s: Vec::new(),
        vs_floor: Vec::new(),
        vs_tonic: Vec::new(),
        allocs: Vec::new(),
    };
    for pass in passes {
        let ips_of = |r: StreamRow| {
            pass.iter()
                .find(|m| m.row == r && m.dir == dir && m.size == size)
                .map(|m| m.items as f64 / m.secs)
        };
        let Some(m) = pass
            .iter()
            .find(|m| m.row == row && m.dir == dir && m.size == size)
        else {
            continue;
        };
        let ips = m.items as f64 / m.secs;
        c.items = m.items;
        c.items_per_s.push(ips);
        c.allocs.push(m.allocs);
        if let Some(f) = ips_of(StreamRow::Floor) {
            c.vs_floor.push(ips / f);
        }
        if let Some(t) = ips_of(StreamRow::Tonic) {
            c.vs_tonic.push(ips / t);
        }
    }
    c
}

/// MB/s (10^6 payload bytes) at `ips` items of `size` bytes per second.
fn mb_per_s(ips: Option<f64>, size: usize) -> Option<f64> {
    ips.map(|x| x * size as f64 / 1e6)
}

fn stream_json(cells: &[StreamCell]) -> serde_json::Value {
    cells
        .iter()
        .map(|x| {
            serde_json::json!({
                "row": x.row.name(),
                "direction": x.dir.name(),
                "size": x.size,
                "items": x.items,
                "items_per_s": median(&x.items_per_s),
                "mb_per_s": mb_per_s(median(&x.items_per_s), x.size),
                "vs_floor": median(&x.vs_floor),
                "vs_tonic": median(&x.vs_tonic),
                "vs_floor_range": range(&x.vs_floor).map(|(a, b)| [a, b]),
                "passes": {
                    "items_per_s": x.items_per_s,
                    "vs_floor": x.vs_floor,
                    "vs_tonic": x.vs_tonic,
                },
                "allocs_per_item": median(&x.allocs),
            })
        })
        .collect::<Vec<_>>()
        .into()
}

fn stream_report(c: &Config, cells: &[StreamCell]) {
    let items: Vec<String> = c
        .stream_sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| format!("{} at {size}", stream_items_for(c, i, size)))
        .collect();
    println!(
        "streaming: one connection, one stream per cell; items per cell {} in each of {} passes \
(rows in turn, order rotated each pass); stream-uds download window {}; medians over the passes \
(× floor: median of per-pass ratios to stream-floor in the same direction, range in brackets); \
allocations per item over the timed runs, client + server",
        items.join(", "),
        c.passes,
        c.stream_window
    );
    println!("| row | direction | size | items/s | MB/s | × floor | × tonic | allocs/item |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let f = |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |x| format!("{x:.digits$}"));
    for x in cells {
        let floor = match (median(&x.vs_floor), range(&x.vs_floor)) {
            (Some(m), Some((lo, hi))) if c.passes > 1 => format!("{m:.2} ({lo:.2}–{hi:.2})"),
            (m, _) => f(m, 2),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            x.row.name(),
            x.dir.name(),
            x.size,
            f(median(&x.items_per_s), 0),
            f(mb_per_s(median(&x.items_per_s), x.size), 0),
            floor,
            f(median(&x.vs_tonic), 2),
            f(median(&x.allocs), 2),
        );
    }
}

/// Prints, per streaming cell present in both, the change from an earlier
/// `--json` run to this one.
fn stream_compare(old: &serde_json::Value, new: &serde_json::Value) {
    let cells = |v: &serde_json::Value| v["stream_cells"].as_array().cloned().unwrap_or_default();
    let old_cells = cells(old);
    println!();
    println!("| row | direction | size | items/s old → new | change | × floor old → new |");
    println!("|---|---|---:|---:|---:|---:|");
    for n in cells(new) {
        let Some(o) = old_cells.iter().find(|o| {
            o["row"] == n["row"] && o["direction"] == n["direction"] && o["size"] == n["size"]
        }) else {
            continue;
        };
        let num = |v: &serde_json::Value, k: &str| v[k].as_f64();
        let (Some(io), Some(inew)) = (num(o, "items_per_s"), num(&n, "items_per_s")) else {
            continue;
        };
        let floor = floor_change(o, &n);
        println!(
            "| {} | {} | {} | {io:.0} → {inew:.0} | {:+.1} % | {floor} |",
            n["row"].as_str().unwrap_or("?"),
            n["direction"].as_str().unwrap_or("?"),
            n["size"],
            (inew / io - 1.0) * 100.0,
        );
    }
}

/// The cell of `row` at `size`, from every pass.
fn cell(row: Row, size: usize, passes: &[Vec<Measured>], allocs: f64, alloc_bytes: f64) -> Cell {
    let mut c = Cell {
        row,
        size,
        requests: 0,
        rps: Vec::new(),
        p50_us: Vec::new(),
        p99_us: Vec::new(),
        vs_floor: Vec::new(),
        vs_tarpc: Vec::new(),
        vs_tonic: Vec::new(),
        allocs,
        alloc_bytes,
    };
    for pass in passes {
        let rps_of = |r: Row| {
            pass.iter()
                .find(|m| m.row == r && m.size == size)
                .map(|m| m.summary.rps)
        };
        let Some(m) = pass.iter().find(|m| m.row == row && m.size == size) else {
            continue;
        };
        c.requests += m.summary.requests;
        c.rps.push(m.summary.rps);
        c.p50_us.push(m.summary.p50_us);
        c.p99_us.push(m.summary.p99_us);
        // The floor of a pass is the faster of the two.
        let floor = [rps_of(Row::Floor), rps_of(Row::FloorStd)]
            .into_iter()
            .flatten()
            .reduce(f64::max);
        if let Some(f) = floor {
            c.vs_floor.push(m.summary.rps / f);
        }
        if let Some(t) = rps_of(Row::Tarpc) {
            c.vs_tarpc.push(m.summary.rps / t);
        }
        if let Some(t) = rps_of(Row::Tonic) {
            c.vs_tonic.push(m.summary.rps / t);
        }
    }
    c
}

fn to_json(c: &Config, cells: &[Cell]) -> serde_json::Value {
    let cells: Vec<serde_json::Value> = cells
        .iter()
        .map(|x| {
            serde_json::json!({
                "row": x.row.name(),
                "size": x.size,
                "requests": x.requests,
                "rps": median(&x.rps),
                "p50_us": median(&x.p50_us),
                "p99_us": median(&x.p99_us),
                "vs_floor": median(&x.vs_floor),
                "vs_tarpc": median(&x.vs_tarpc),
                "vs_tonic": median(&x.vs_tonic),
                "vs_floor_range": range(&x.vs_floor).map(|(a, b)| [a, b]),
                "passes": {
                    "rps": x.rps,
                    "vs_floor": x.vs_floor,
                    "vs_tarpc": x.vs_tarpc,
                    "vs_tonic": x.vs_tonic,
                },
                "allocs_per_req": x.allocs,
                "bytes_per_req": x.alloc_bytes,
            })
        })
        .collect();
    serde_json::json!({
        "users": c.users,
        "passes": c.passes,
        "rounds": c.rounds,
        "requests": c.requests,
        "big_requests": c.big_requests,
        "cells": cells,
    })
}

fn report(c: &Config, cells: &[Cell]) {
    println!(
        "users {}, {} requests per size ({} at >= 1 MB) in each of {} passes of {} interleaved rounds; \
medians over the passes (× floor: median of per-pass ratios to the faster floor, range in brackets); \
allocations with 1 user, client + server",
        c.users, c.requests, c.big_requests, c.passes, c.rounds
    );
    println!(
        "| row | size | rps | p50 µs | p99 µs | × floor | × tarpc | × tonic | allocs/req | bytes/req |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let f = |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |x| format!("{x:.digits$}"));
    for x in cells {
        let floor = match (median(&x.vs_floor), range(&x.vs_floor)) {
            (Some(m), Some((lo, hi))) if c.passes > 1 => format!("{m:.2} ({lo:.2}–{hi:.2})"),
            (m, _) => f(m, 2),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.0} |",
            x.row.name(),
            x.size,
            f(median(&x.rps), 0),
            f(median(&x.p50_us), 0),
            f(median(&x.p99_us), 0),
            floor,
            f(median(&x.vs_tarpc), 2),
            f(median(&x.vs_tonic), 2),
            x.allocs,
            x.alloc_bytes
        );
    }
}

/// A cell's × floor, old → new, or `-` if either run lacks it.
fn floor_change(old: &serde_json::Value, new: &serde_json::Value) -> String {
    match (old["vs_floor"].as_f64(), new["vs_floor"].as_f64()) {
        (Some(a), Some(b)) => format!("{a:.2} → {b:.2}"),
        _ => "-".to_owned(),
    }
}

/// Prints, per cell present in both, the change from an earlier `--json`
/// run to this one.
fn compare(old: &serde_json::Value, new: &serde_json::Value) {
    let cells = |v: &serde_json::Value| v["cells"].as_array().cloned().unwrap_or_default();
    let old_cells = cells(old);
    println!();
    println!("| row | size | rps old → new | change | × floor old → new |");
    println!("|---|---:|---:|---:|---:|");
    for n in cells(new) {
        let Some(o) = old_cells
            .iter()
            .find(|o| o["row"] == n["row"] && o["size"] == n["size"])
        else {
            continue;
        };
        let num = |v: &serde_json::Value, k: &str| v[k].as_f64();
        let (Some(ro), Some(rn)) = (num(o, "rps"), num(&n, "rps")) else {
            continue;
        };
        let floor = floor_change(o, &n);
        println!(
            "| {} | {} | {ro:.0} → {rn:.0} | {:+.1} % | {floor} |",
            n["row"].as_str().unwrap_or("?"),
            n["size"],
            (rn / ro - 1.0) * 100.0,
        );
    }
}
