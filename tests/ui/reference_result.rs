// A result cannot borrow: say which owned type to return.
#[uds::service]
pub trait Svc {
    async fn name(&self) -> &str;
}

fn main() {}
