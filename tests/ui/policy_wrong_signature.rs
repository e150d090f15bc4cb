// A policy function of the wrong type: the error is on its path.
fn my_policy(uid: u32) -> bool {
    uid == 0
}

#[uds::service]
pub trait Svc {
    #[uds(policy = my_policy)]
    async fn get(&self) -> u32;
}

fn main() {}
