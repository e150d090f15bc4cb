// `allow()` lists nobody: an error, never a silent deny-all or allow-all.
#[uds::service]
pub trait Svc {
    #[uds(allow())]
    async fn get(&self) -> u32;
}

fn main() {}
