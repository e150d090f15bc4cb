// The server returns `ServerStream<T>`; `ClientStream<T>` is the client's.
#[uds::service]
pub trait Svc {
    async fn ticks(&self) -> uds::ClientStream<u64>;
}

fn main() {}
