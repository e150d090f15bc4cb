// `_` as an argument name: the name is part of the wire format.
#[uds::service]
pub trait Svc {
    async fn put(&self, _: u64, b: u64);
}

fn main() {}
