// An unsized argument: one error saying to take `String`.
#[uds::service]
pub trait Svc {
    async fn echo(&self, s: str) -> String;
}

fn main() {}
