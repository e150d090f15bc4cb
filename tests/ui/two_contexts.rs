// Two context arguments: one error, on the second.
#[uds::service]
pub trait Svc {
    async fn whoami(&self, ctx: &uds::Context, again: &uds::Context) -> u32;
}

fn main() {}
