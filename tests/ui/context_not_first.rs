#[uds::service]
pub trait Svc {
    async fn who(&self, n: u32, ctx: &uds::Context) -> u32;
}

fn main() {}
