//! The integration suite: one binary, real gateways on loopback.

mod errors;
mod lifecycle;
mod ops;
mod pool;
mod security;
