// Every mistake is reported in one pass, and the impl below (correct for
// the trait as written) causes no further errors.
#[uds::service]
pub trait Svc {
    fn not_async(&self) -> u32;
    async fn mutable(&mut self) -> u32;
    async fn fine(&self, a: u32) -> u32;
}

pub struct S;

impl Svc for S {
    fn not_async(&self) -> u32 {
        1
    }
    async fn mutable(&mut self) -> u32 {
        2
    }
    async fn fine(&self, a: u32) -> u32 {
        a
    }
}

fn main() {}
