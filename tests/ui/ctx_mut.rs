// The context taken by `&mut`.
#[uds::service]
pub trait Svc {
    async fn whoami(&self, ctx: &mut uds::Context) -> u32;
}

fn main() {}
