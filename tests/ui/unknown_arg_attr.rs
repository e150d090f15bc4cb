// A misspelt argument option.
#[uds::service]
pub trait Svc {
    async fn put(&self, key: String, #[uds(defualt)] ttl: Option<u64>);
}

fn main() {}
