// `ServerStream` is a result; a client stream is taken as `Streaming<T>`, last.
#[uds::service]
pub trait Svc {
    async fn put(&self, items: uds::ServerStream<u64>) -> u64;
}

fn main() {}
