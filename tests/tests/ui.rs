//! Compile-time behaviour of `#[uds::service]`: every mistake gets a spanned
//! error (snapshots in `ui/*.stderr`), and valid services compile, also
//! without the prelude and with the crate renamed.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/*.rs");
    t.pass("ui/pass/*.rs");
}
