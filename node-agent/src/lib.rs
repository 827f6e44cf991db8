//! The Darter node agent: piece engine, local storage, origin client and the
//! peer piece service.

pub mod backend;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod error;
pub mod peer;
pub mod storage;
pub mod swarm;

pub use error::{Error, Result};
