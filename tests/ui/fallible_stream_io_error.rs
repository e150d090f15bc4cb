// A fallible stream's error travels too: not `std::io::Error`.
#[uds::service]
pub trait Svc {
    async fn lines(&self) -> uds::ServerStream<Result<String, std::io::Error>>;
}

fn main() {}
