// A method option given to the whole service.
#[uds::service(name = "/x")]
pub trait Svc {
    async fn get(&self) -> u32;
}

fn main() {}
