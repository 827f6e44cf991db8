//! The Darter node agent: piece engine, local storage and origin client.

pub mod backend;
pub mod config;
pub mod engine;
pub mod error;
pub mod storage;

pub use error::{Error, Result};
