//! Procedural macros for [`uds`](https://docs.rs/uds).
//!
//! This crate is an implementation detail of `uds`; depend on `uds` and use
//! the macros through its re-exports. The `#[uds::service]` attribute lands
//! here once the RPC layer it expands into exists.
