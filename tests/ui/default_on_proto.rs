// `#[uds(default)]` is for JSON services.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Req {
    #[prost(uint32, tag = "1")]
    pub id: u32,
}

#[uds::service(codec = "proto")]
pub trait Svc {
    async fn put(&self, #[uds(default)] req: Option<Req>);
}

fn main() {}
