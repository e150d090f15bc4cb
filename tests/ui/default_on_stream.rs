// `default` is for JSON data arguments, not the stream.
#[uds::service]
pub trait Svc {
    async fn upload(&self, #[uds(default)] chunks: uds::Streaming<u8>) -> u64;
}

fn main() {}
