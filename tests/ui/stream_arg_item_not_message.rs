// A client stream of a proto service carries messages.
pub struct Chunk;

#[uds::service(codec = "proto")]
pub trait Svc {
    async fn upload(&self, chunks: uds::Streaming<Chunk>) -> ();
}

fn main() {}
