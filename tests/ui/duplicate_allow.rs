// Two `allow` on one method: an error, not a silent union of both.
#[uds::service]
pub trait Svc {
    #[uds(allow(uid = 0))]
    #[uds(allow = "same_user")]
    async fn get(&self) -> u32;
}

fn main() {}
