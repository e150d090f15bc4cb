// A bidirectional method: the reply items must be serde too.
pub struct Reply;

#[uds::service]
pub trait Svc {
    async fn chat(&self, words: uds::Streaming<String>) -> uds::ServerStream<Reply>;
}

fn main() {}
