// A stream is a whole argument, not inside one.
#[uds::service]
pub trait Svc {
    async fn upload(&self, chunks: Vec<uds::Streaming<u8>>) -> u64;
}

fn main() {}
