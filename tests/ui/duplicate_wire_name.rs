#[uds::service]
pub trait Svc {
    #[uds(name = "/echo")]
    async fn echo(&self, s: String) -> String;
    #[uds(name = "/echo")]
    async fn echo2(&self, s: String) -> String;
}

fn main() {}
