//! Runnable examples of the `uds` crate live in `examples/`; run one with
//! `cargo run -p uds-examples --example NAME`. This library is empty.
