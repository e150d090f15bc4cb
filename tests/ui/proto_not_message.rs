#[derive(Clone, PartialEq, prost::Message)]
pub struct Req {
    #[prost(int64, tag = "1")]
    pub n: i64,
}

pub struct NotAMessage;

#[uds::service(codec = "proto")]
pub trait Svc {
    async fn get(&self, req: Req) -> NotAMessage;
    async fn put(&self, n: i64) -> Req;
}

fn main() {}
