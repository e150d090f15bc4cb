#[uds::service]
pub trait Svc {
    async fn greet(&self, name: &str) -> String;
    async fn fill(&self, buf: &mut Vec<u8>);
}

fn main() {}
