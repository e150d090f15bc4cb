// `name` without `= "..."`: the error is on `name`.
#[uds::service]
pub trait Svc {
    #[uds(name)]
    async fn get(&self) -> u32;
}

fn main() {}
