#[uds::service]
pub trait Svc {
    async fn version() -> u32;
}

fn main() {}
