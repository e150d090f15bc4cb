// A misspelt method option.
#[uds::service]
pub trait Svc {
    #[uds(nmae = "/x")]
    async fn get(&self) -> u32;
}

fn main() {}
