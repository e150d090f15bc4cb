// The stream argument goes last: the other arguments travel with the request.
#[uds::service]
pub trait Svc {
    async fn upload(&self, chunks: uds::Streaming<Vec<u8>>, name: String) -> u64;
}

fn main() {}
