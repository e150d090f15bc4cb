// A method named `clone` would shadow `Clone::clone` on the client.
#[uds::service]
pub trait Svc {
    async fn clone(&self) -> u32;
}

fn main() {}
