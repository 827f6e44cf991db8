//! Helpers for Darter's tests and benchmarks. Not shipped in images.

pub mod origin;
pub mod tls;

pub use origin::{Origin, OriginOptions};
