// A method named like the client's per-call option method.
#[uds::service]
pub trait Svc {
    async fn with_timeout(&self, ms: u64) -> u32;
}

fn main() {}
