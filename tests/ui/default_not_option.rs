// `#[uds(default)]` needs an `Option`.
#[uds::service]
pub trait Svc {
    async fn put(&self, key: String, #[uds(default)] ttl: u64);
}

fn main() {}
