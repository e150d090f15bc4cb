// A reference nested in an argument: the error is on the `&`.
#[uds::service]
pub trait Svc {
    async fn join(&self, parts: Vec<&'static str>) -> String;
}

fn main() {}
