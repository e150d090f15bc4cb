// A `&Context` that is not uds's: one error, on the user's type.
mod app {
    pub struct Context;
}

#[uds::service]
pub trait Svc {
    async fn whoami(&self, ctx: &app::Context) -> u32;
}

pub struct S;

impl Svc for S {
    async fn whoami(&self, _ctx: &app::Context) -> u32 {
        0
    }
}

fn main() {}
