#[uds::service]
pub trait Svc {
    async fn connect(&self, host: String) -> bool;
    async fn new(&self) -> u32;
}

fn main() {}
