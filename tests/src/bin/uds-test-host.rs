//! A host for the plugin tests that are about the host dying: starts
//! `uds-test-plugin` (path in the first argument, its mode in the second),
//! prints the plugin's pid on stdout, then waits to be killed. With
//! `pdeathsig` as the third argument, the plugin is started with
//! `kill_on_host_death`.

use std::io::Write;

use uds_tests::plugin_api::TestPluginClient;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let plugin_bin = args.next().expect("plugin binary path");
    let mode = args.next().expect("plugin mode");
    let pdeathsig = args.next().as_deref() == Some("pdeathsig");
    let plugin = uds::plugin::Command::new(plugin_bin)
        .arg(mode)
        .kill_on_host_death(pdeathsig)
        .spawn::<TestPluginClient>()
        .await
        .expect("spawn plugin");
    let pid = plugin.client().pid().await.expect("pid call");
    println!("{pid}");
    std::io::stdout().flush().expect("flush");
    // Keep the plugin (and a call in flight) until we are killed.
    let _ = plugin.client().slow(3_600_000).await;
}
