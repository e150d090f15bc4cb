#[uds::service]
pub trait Svc {
    type Item;
    const N: usize;
    async fn a(&self) -> u32;
}

fn main() {}
