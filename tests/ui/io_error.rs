// `std::io::Error` as the error type cannot be sent.
#[uds::service]
pub trait Svc {
    async fn read(&self) -> Result<Vec<u8>, std::io::Error>;
}

fn main() {}
