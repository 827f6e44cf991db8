//! Code shared by the Darter operator and node agent: task identity, piece math,
//! content digests and the unit-bearing config value types.

pub mod digest;
pub mod piece;
pub mod ratelimit;
pub mod task_id;
pub mod tls;
pub mod units;

pub use digest::{Digest, DigestAlgorithm, DigestError, DigestHasher};
pub use piece::{PieceRange, piece_count, piece_length_for, piece_range};
pub use ratelimit::RateLimiter;
pub use task_id::{DEFAULT_FILTERED_QUERY_PARAMS, TaskIdError, TaskIdParams, task_id};
pub use tls::{MutualTls, TlsError, TlsFiles};
pub use units::{ByteRate, ByteSize, UnitError};
