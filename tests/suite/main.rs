//! The integration suite: one binary, real gateways on loopback.

mod delivery;
mod early;
mod errors;
mod files;
mod hostile;
mod lifecycle;
mod ops;
mod pool;
mod security;
mod session;
