// `#[uds::service]` on the impl instead of the trait.
pub trait Svc {
    fn get(&self) -> u32;
}

pub struct S;

#[uds::service]
impl Svc for S {
    fn get(&self) -> u32 {
        0
    }
}

fn main() {}
