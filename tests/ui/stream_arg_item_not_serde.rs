// A client stream of a type that is not serde: one error, on the item type.
pub struct Chunk;

#[uds::service]
pub trait Svc {
    async fn upload(&self, chunks: uds::Streaming<Chunk>) -> u64;
}

fn main() {}
