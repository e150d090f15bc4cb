// Two wire names on one method: an error, not "the last wins".
#[uds::service]
pub trait Svc {
    #[uds(name = "/a/get")]
    #[uds(name = "/b/get")]
    async fn get(&self) -> u32;
}

fn main() {}
