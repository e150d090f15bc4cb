// Streams are not arguments (yet): the error says where a stream goes.
#[uds::service]
pub trait Svc {
    async fn put(&self, items: uds::ServerStream<u64>) -> u64;
}

fn main() {}
