#[uds::service(codec = "xml")]
pub trait Svc {
    async fn a(&self) -> u32;
}

fn main() {}
