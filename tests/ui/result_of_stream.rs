// `Result<ServerStream<T>, E>` is not a shape the macro serves.
#[uds::service]
pub trait Svc {
    async fn ticks(&self) -> Result<uds::ServerStream<u64>, String>;
}

fn main() {}
