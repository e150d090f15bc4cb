// `policy` given twice on one method.
fn a(_: &uds::Cred) -> bool {
    true
}

#[uds::service]
pub trait Svc {
    #[uds(policy = a, policy = a)]
    async fn get(&self) -> u32;
}

fn main() {}
