// A `crate = "..."` path that does not exist: one error, on the string.
#[uds::service(crate = "not_uds")]
pub trait Svc {
    async fn get(&self) -> u32;
}

fn main() {}
