// The uds crate under another name (as `my_uds = { package = "uds" }` in
// Cargo.toml would give): `crate = "..."` tells the macro where it is.
extern crate uds as my_uds;

/// Echo.
#[my_uds::service(crate = "::my_uds", codec = "proto")]
pub trait Echo {
    /// Echoes.
    async fn echo(&self, req: Msg) -> Msg;
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(string, tag = "1")]
    pub text: String,
}

fn main() {
    let _ = EchoClient::new;
}
