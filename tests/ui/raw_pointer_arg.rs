// A raw pointer nested in an argument.
#[uds::service]
pub trait Svc {
    async fn put(&self, a: Vec<*const u8>);
}

fn main() {}
