//! Sizes and rates with units (`40MiB`, `1GiB`, `100MB`, `10MiB/s`), usable in
//! YAML config and on the command line.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

#[derive(Debug, Error)]
#[error("invalid size {input:?}: {reason} (examples: 4MiB, 1GiB, 100MB, 512)")]
pub struct UnitError {
    input: String,
    reason: String,
}

/// A byte count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn gib(n: u64) -> Self {
        Self(n << 30)
    }
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_size::parse_size(s.trim())
            .map(ByteSize)
            .map_err(|e| UnitError {
                input: s.to_string(),
                reason: e.to_string(),
            })
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        let mut v = self.0 as f64;
        let mut i = 0;
        while v >= 1024.0 && i < UNITS.len() - 1 {
            v /= 1024.0;
            i += 1;
        }
        if i == 0 {
            write!(f, "{}B", self.0)
        } else if v.fract() == 0.0 {
            write!(f, "{}{}", v as u64, UNITS[i])
        } else {
            write!(f, "{:.1}{}", v, UNITS[i])
        }
    }
}

/// Bytes per second; written with or without a trailing `/s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteRate(pub u64);

impl FromStr for ByteRate {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let t = t.strip_suffix("/s").unwrap_or(t);
        t.parse::<ByteSize>()
            .map(|b| ByteRate(b.0))
            .map_err(|e| UnitError {
                input: s.to_string(),
                reason: e.reason,
            })
    }
}

impl fmt::Display for ByteRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", ByteSize(self.0))
    }
}

macro_rules! serde_as_string {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // Accept plain numbers (bytes) as well as strings with units.
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum Raw {
                    N(u64),
                    S(String),
                }
                match Raw::deserialize(d)? {
                    Raw::N(n) => Ok(Self(n)),
                    Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
                }
            }
        }
    };
}
serde_as_string!(ByteSize);
serde_as_string!(ByteRate);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!("40MiB".parse::<ByteSize>().unwrap().0, 40 << 20);
        assert_eq!("1GiB".parse::<ByteSize>().unwrap().0, 1 << 30);
        assert_eq!("100MB".parse::<ByteSize>().unwrap().0, 100_000_000);
        assert_eq!("512".parse::<ByteSize>().unwrap().0, 512);
        assert_eq!("10MiB/s".parse::<ByteRate>().unwrap().0, 10 << 20);
        assert!("ten".parse::<ByteSize>().is_err());
        assert!("-1MiB".parse::<ByteRate>().is_err());
    }

    #[test]
    fn displays_round_trip() {
        for s in ["40MiB", "1GiB", "17B", "1.5GiB"] {
            let b: ByteSize = s.parse().unwrap();
            assert_eq!(b.to_string(), s);
        }
        assert_eq!(ByteRate(10 << 20).to_string(), "10MiB/s");
    }
}
