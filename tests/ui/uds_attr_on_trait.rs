// `#[uds(...)]` on the trait: the service's options go in the macro's arguments.
#[uds::service]
#[uds(codec = "proto")]
pub trait Svc {
    async fn get(&self) -> u32;
}

fn main() {}
