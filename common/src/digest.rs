//! Whole-content digests a caller can ask a download to match:
//! `sha256:<hex>`, `sha512:<hex>` or `crc32c:<decimal or 8 hex digits>`.

use sha2::{Digest as _, Sha256, Sha512};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest {0:?} must look like ALGORITHM:VALUE (sha256, sha512 or crc32c)")]
    Format(String),
    #[error("unsupported digest algorithm {0:?} (use sha256, sha512 or crc32c)")]
    Algorithm(String),
    #[error("digest value {value:?} is not a valid {algorithm} value")]
    Value { algorithm: String, value: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Sha256,
    Sha512,
    Crc32c,
}

impl DigestAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
            Self::Crc32c => "crc32c",
        }
    }
}

/// A digest value with its algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub algorithm: DigestAlgorithm,
    /// Raw digest bytes (big-endian for CRC-32C).
    pub bytes: Vec<u8>,
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), hex::encode(&self.bytes))
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, value) = s
            .split_once(':')
            .ok_or_else(|| DigestError::Format(s.to_string()))?;
        let bad = || DigestError::Value {
            algorithm: alg.to_string(),
            value: value.to_string(),
        };
        let (algorithm, bytes) = match alg.to_ascii_lowercase().as_str() {
            "sha256" => (
                DigestAlgorithm::Sha256,
                decode_hex(value, 32).ok_or_else(bad)?,
            ),
            "sha512" => (
                DigestAlgorithm::Sha512,
                decode_hex(value, 64).ok_or_else(bad)?,
            ),
            "crc32c" | "crc32" => {
                // Dragonfly writes piece CRCs as decimal (`crc32:123`); accept 8 hex digits too.
                let n = if value.len() == 8 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    u32::from_str_radix(value, 16).ok()
                } else {
                    value.parse::<u32>().ok()
                };
                (
                    DigestAlgorithm::Crc32c,
                    n.ok_or_else(bad)?.to_be_bytes().to_vec(),
                )
            }
            _ => return Err(DigestError::Algorithm(alg.to_string())),
        };
        Ok(Self { algorithm, bytes })
    }
}

fn decode_hex(value: &str, len: usize) -> Option<Vec<u8>> {
    hex::decode(value).ok().filter(|b| b.len() == len)
}

/// Incremental hasher for one algorithm.
pub enum DigestHasher {
    Sha256(Box<Sha256>),
    Sha512(Box<Sha512>),
    Crc32c(u32),
}

impl DigestHasher {
    pub fn new(algorithm: DigestAlgorithm) -> Self {
        match algorithm {
            DigestAlgorithm::Sha256 => Self::Sha256(Box::default()),
            DigestAlgorithm::Sha512 => Self::Sha512(Box::default()),
            DigestAlgorithm::Crc32c => Self::Crc32c(0),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
            Self::Crc32c(c) => *c = crc32c::crc32c_append(*c, data),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Self::Sha256(h) => Digest {
                algorithm: DigestAlgorithm::Sha256,
                bytes: h.finalize().to_vec(),
            },
            Self::Sha512(h) => Digest {
                algorithm: DigestAlgorithm::Sha512,
                bytes: h.finalize().to_vec(),
            },
            Self::Crc32c(c) => Digest {
                algorithm: DigestAlgorithm::Crc32c,
                bytes: c.to_be_bytes().to_vec(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_compute() {
        // sha256("abc") from FIPS 180-2.
        let d: Digest = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
            .parse()
            .unwrap();
        let mut h = DigestHasher::new(d.algorithm);
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), d);
        // CRC-32C("123456789") = 0xE3069283 (the standard check value).
        let c: Digest = "crc32c:e3069283".parse().unwrap();
        assert_eq!(c, format!("crc32c:{}", 0xE306_9283u32).parse().unwrap());
        let mut h = DigestHasher::new(DigestAlgorithm::Crc32c);
        h.update(b"12345");
        h.update(b"6789");
        assert_eq!(h.finish(), c);
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            "md5:00".parse::<Digest>(),
            Err(DigestError::Algorithm("md5".into()))
        );
        assert!(matches!(
            "sha256:abcd".parse::<Digest>(),
            Err(DigestError::Value { .. })
        ));
        assert!(matches!(
            "sha256".parse::<Digest>(),
            Err(DigestError::Format(_))
        ));
    }
}
