// `mut` on an argument of the trait.
#[uds::service]
pub trait Svc {
    async fn put(&self, mut a: u64);
}

fn main() {}
