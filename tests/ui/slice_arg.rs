// An unsized slice argument: one error saying to take `Vec<T>`.
#[uds::service]
pub trait Svc {
    async fn sum(&self, v: [u8]) -> u64;
}

fn main() {}
