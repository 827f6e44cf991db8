//! The Darter node agent: piece engine, local storage, origin client and the
//! peer piece service.

pub mod backend;
pub mod config;
pub mod engine;
pub mod error;
pub mod peer;
pub mod storage;

pub use error::{Error, Result};
