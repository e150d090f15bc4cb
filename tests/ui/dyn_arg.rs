// A boxed trait object argument cannot be decoded.
#[uds::service]
pub trait Svc {
    async fn put(&self, a: Box<dyn std::any::Any>);
}

fn main() {}
