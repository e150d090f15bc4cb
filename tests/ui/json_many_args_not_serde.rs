// One of several JSON arguments is not serde: one error, on its type.
pub struct Blob;

#[uds::service]
pub trait Svc {
    async fn put(&self, key: String, value: Blob, ttl: u64);
}

fn main() {}
