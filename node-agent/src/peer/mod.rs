//! Agent <-> agent piece transfer (`darter.peer.v1`): the upload server that
//! serves stored pieces (also of unfinished tasks) and the client that fetches
//! one piece from a parent and checks it against the parent's CRC-32C.

pub mod client;
pub mod server;
pub mod tcp;

/// Bytes per chunk message on the wire.
pub const CHUNK: usize = 1 << 20;
