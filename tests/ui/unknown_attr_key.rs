#[uds::service(codec = "json", timeout = "5s")]
pub trait Svc {
    #[uds(name = "/a", retries = "3")]
    async fn a(&self) -> u32;
}

fn main() {}
