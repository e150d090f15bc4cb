// An unknown rule name.
#[uds::service(allow = "everyone")]
pub trait Svc {
    async fn get(&self) -> u32;
}

fn main() {}
