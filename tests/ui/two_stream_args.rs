// One stream argument per method.
#[uds::service]
pub trait Svc {
    async fn merge(&self, a: uds::Streaming<u32>, b: uds::Streaming<u32>) -> u64;
}

fn main() {}
