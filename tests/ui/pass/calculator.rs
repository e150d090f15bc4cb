use uds::{CallError, Context, ServerStream};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum MathError {
    DivideByZero,
}

/// A calculator.
#[uds::service]
pub trait Calculator {
    /// Adds.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Divides.
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// Sums.
    #[uds(name = "/math/sum")]
    async fn sum(&self, ctx: &Context, ints: Vec<i64>) -> i64;
    /// Ticks.
    async fn ticks(&self, every_ms: u64) -> ServerStream<u64>;
    /// Nothing in, nothing out.
    async fn ping(&self);
}

struct Imp;

impl Calculator for Imp {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_div(b).ok_or(MathError::DivideByZero)
    }
    async fn sum(&self, _ctx: &Context, ints: Vec<i64>) -> i64 {
        ints.iter().sum()
    }
    async fn ticks(&self, every_ms: u64) -> ServerStream<u64> {
        ServerStream::iter(0..every_ms)
    }
    async fn ping(&self) {}
}

async fn use_it(c: CalculatorClient) -> Result<i64, CallError<MathError>> {
    let _ = c.add(1, 2).await?;
    let _ = c.ticks(3).await?;
    c.ping().await?;
    c.div(4, 2).await
}

fn main() {
    let _server = CalculatorServer::new(Imp);
    let _ = use_it;
}
