#[uds::service]
pub trait Svc: Clone {
    async fn a(&self) -> u32;
}

fn main() {}
