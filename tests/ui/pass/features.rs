// Everything the macro accepts beyond the basics compiles, without
// warnings from generated code (deprecated methods included).
#![deny(warnings)]

use std::time::Duration;

fn local_only(peer: &uds::Cred) -> bool {
    peer.pid > 0
}

/// A service with authorization, options and attributes.
#[uds::service(allow = "same_user")]
pub trait Admin: Send + Sync + 'static {
    /// Open to the trait's rule.
    async fn ping(&self);
    /// Narrowed to a group.
    #[uds(allow(gid = 4242, uid = [0, 1000]))]
    async fn reboot(&self, ctx: &uds::rpc::Context, r#type: String) -> u32;
    /// A custom policy.
    #[uds(policy = local_only, name = "/admin/local")]
    async fn local(&self, a: u32, #[uds(default)] b: Option<u32>) -> u32;
    /// Only with the feature.
    #[cfg(any())]
    async fn gone(&self, x: NotDefinedAnywhere) -> u32;
    /// Old.
    #[deprecated(note = "use ping")]
    async fn old_ping(&self);
}

struct Imp;

impl Admin for Imp {
    async fn ping(&self) {}
    async fn reboot(&self, _ctx: &uds::rpc::Context, r#type: String) -> u32 {
        r#type.len() as u32
    }
    async fn local(&self, a: u32, b: Option<u32>) -> u32 {
        a + b.unwrap_or(0)
    }
    async fn old_ping(&self) {}
}

async fn use_it(c: AdminClient) -> Result<u32, uds::rpc::RpcError> {
    c.with_timeout(Duration::from_millis(10)).ping().await?;
    let opts = uds::rpc::CallOptions::timeout(Duration::from_secs(1));
    let _ = c.with_options(opts).options().timeout;
    c.local(1, None).await
}

fn main() {
    let _server = AdminServer::new(Imp);
    let _ = use_it;
}
