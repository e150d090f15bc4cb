// A uid that is not a `u32`.
#[uds::service]
pub trait Svc {
    #[uds(allow(uid = -1))]
    async fn get(&self) -> u32;
}

fn main() {}
