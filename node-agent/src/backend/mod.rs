//! Back-to-source: fetching content from the origin.

pub mod http;

pub use http::{HttpBackend, Probe};
