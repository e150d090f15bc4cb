// A JSON result whose type is not serde: one error, on that type.
pub struct Reply;

#[uds::service]
pub trait Svc {
    async fn get(&self, id: u32) -> Reply;
}

fn main() {}
