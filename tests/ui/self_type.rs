// `Self` in a signature is the implementing type (the client, in
// generated code): it cannot travel.
#[uds::service]
pub trait Svc {
    async fn copy(&self) -> Option<Self>;
}

fn main() {}
