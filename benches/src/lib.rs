//! What the benchmarks share.

pub mod cores;
pub mod perf;
