// `Send + Sync` are accepted; any other supertrait is an error on it.
#[uds::service]
pub trait Svc: Send + Sync + std::fmt::Debug {
    async fn get(&self) -> u32;
}

fn main() {}
