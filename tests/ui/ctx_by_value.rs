// The context taken by value.
#[uds::service]
pub trait Svc {
    async fn whoami(&self, ctx: uds::Context) -> u32;
}

fn main() {}
