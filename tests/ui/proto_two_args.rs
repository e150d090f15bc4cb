#[derive(Clone, PartialEq, prost::Message)]
pub struct Req {
    #[prost(int64, tag = "1")]
    pub n: i64,
}

#[uds::service(codec = "proto")]
pub trait Svc {
    async fn add(&self, a: Req, b: Req) -> Req;
}

fn main() {}
