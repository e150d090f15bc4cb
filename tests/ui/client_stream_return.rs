// A handler returns `ServerStream<T>`; `Streaming<T>` is what the client gets.
#[uds::service]
pub trait Svc {
    async fn ticks(&self) -> uds::Streaming<u64>;
}

fn main() {}
