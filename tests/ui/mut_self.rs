#[uds::service]
pub trait Svc {
    async fn incr(&mut self) -> u64;
}

fn main() {}
