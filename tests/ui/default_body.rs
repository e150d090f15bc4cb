#[uds::service]
pub trait Svc {
    async fn a(&self) -> u32 {
        1
    }
}

fn main() {}
