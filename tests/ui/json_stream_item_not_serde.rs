// A stream item that is not serde: one error, on the item type.
pub struct Tick;

#[uds::service]
pub trait Svc {
    async fn ticks(&self) -> uds::ServerStream<Tick>;
}

fn main() {}
