//! What the benchmarks share.

pub mod cores;
