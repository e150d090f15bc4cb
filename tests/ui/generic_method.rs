#[uds::service]
pub trait Svc {
    async fn put<T: serde::Serialize>(&self, value: T) -> u32;
}

fn main() {}
