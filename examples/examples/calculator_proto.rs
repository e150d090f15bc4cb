//! The calculator with the protobuf codec: prost messages derived in Rust
//! (no `protoc`), one message in and one out per method, as a Go proto RPC
//! server expects.
//!
//! Run: `cargo run -p uds-examples --example calculator_proto`

use std::time::Duration;

/// Operands.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Operands {
    /// Left.
    #[prost(int64, tag = "1")]
    pub a: i64,
    /// Right.
    #[prost(int64, tag = "2")]
    pub b: i64,
}

/// A result.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Answer {
    /// The value.
    #[prost(int64, tag = "1")]
    pub value: i64,
}

/// A math error.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MathError {
    /// What went wrong.
    #[prost(string, tag = "1")]
    pub reason: String,
}

/// A calculator speaking protobuf.
#[uds::service(codec = "proto")]
pub trait Calculator {
    /// `a + b`.
    async fn add(&self, ops: Operands) -> Answer;
    /// `a / b`.
    async fn div(&self, ops: Operands) -> Result<Answer, MathError>;
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, ops: Operands) -> Answer {
        Answer {
            value: ops.a + ops.b,
        }
    }
    async fn div(&self, ops: Operands) -> Result<Answer, MathError> {
        ops.a
            .checked_div(ops.b)
            .map(|value| Answer { value })
            .ok_or_else(|| MathError {
                reason: "division by zero".into(),
            })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("calc.sock");
    let server = CalculatorServer::new(Calc).build()?;
    server.serve(uds::net::Listener::bind(&path)?);

    let calc = CalculatorClient::connect(&path).await?;
    let sum = calc.add(Operands { a: 40, b: 2 }).await?;
    println!("client: 40 + 2 = {}", sum.value);
    match calc.div(Operands { a: 1, b: 0 }).await {
        Err(uds::CallError::App(e)) => println!("client: 1 / 0 -> {}", e.reason),
        other => return Err(format!("unexpected {other:?}").into()),
    }
    server.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
