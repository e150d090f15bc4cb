// `io::Result<T>` fixes `io::Error`, which cannot be sent.
use std::io;

#[uds::service]
pub trait Svc {
    async fn read(&self) -> io::Result<Vec<u8>>;
}

fn main() {}
