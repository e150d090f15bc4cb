// A type named like the generated client.
pub struct SvcClient;

#[uds::service]
pub trait Svc {
    async fn get(&self, c: SvcClient) -> u32;
}

fn main() {}
