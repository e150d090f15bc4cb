//! A calculator service with the JSON codec: typed calls, an application
//! error, the caller's credentials, a Go-compatible wire name, a stream.
//!
//! Run: `cargo run -p uds-examples --example calculator_json`

use std::time::Duration;

use futures_util::StreamExt;
use uds::{CallError, Context, ServerStream};

/// Why a division failed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum MathError {
    /// Division by zero.
    DivideByZero,
}

impl std::fmt::Display for MathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("division by zero")
    }
}

/// A calculator.
#[uds::service]
pub trait Calculator {
    /// `a + b`.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// `a / b`, or an error for `b == 0`.
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// The sum, under the name a Go server uses.
    #[uds(name = "/math/sum")]
    async fn sum(&self, ctx: &Context, ints: Vec<i64>) -> i64;
    /// Counts from 0, one number every `every_ms` milliseconds.
    async fn ticks(&self, every_ms: u64) -> ServerStream<u64>;
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_div(b).ok_or(MathError::DivideByZero)
    }
    async fn sum(&self, ctx: &Context, ints: Vec<i64>) -> i64 {
        println!("server: sum for uid {}", ctx.peer().uid);
        ints.iter().sum()
    }
    async fn ticks(&self, every_ms: u64) -> ServerStream<u64> {
        let (tx, stream) = ServerStream::channel(1);
        tokio::spawn(async move {
            for n in 0.. {
                tokio::time::sleep(Duration::from_millis(every_ms)).await;
                if tx.send(n).await.is_err() {
                    break;
                }
            }
        });
        stream
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("calc.sock");
    let server = CalculatorServer::new(Calc).build()?;
    server.serve(uds::net::Listener::bind(&path)?);

    let calc = CalculatorClient::connect(&path).await?;
    println!("client: 2 + 3 = {}", calc.add(2, 3).await?);
    println!("client: 7 / 2 = {}", calc.div(7, 2).await?);
    match calc.div(1, 0).await {
        Err(CallError::App(e)) => println!("client: 1 / 0 -> {e}"),
        other => return Err(format!("unexpected {other:?}").into()),
    }
    println!("client: sum = {}", calc.sum(vec![1, 2, 3, 4]).await?);
    let ticks: Vec<u64> = calc
        .ticks(5)
        .await?
        .take(3)
        .map(|t| t.unwrap_or(u64::MAX))
        .collect()
        .await;
    println!("client: ticks {ticks:?}");
    server.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
