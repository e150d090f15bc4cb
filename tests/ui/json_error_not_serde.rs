// The error type of a `Result` that is not serde: one error, on it.
#[derive(Debug)]
pub struct Oops;

#[uds::service]
pub trait Svc {
    async fn get(&self, id: u32) -> Result<u32, Oops>;
}

fn main() {}
