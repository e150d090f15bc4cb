//! Benchmarks of the `uds` workspace (see the README for how to run them).
