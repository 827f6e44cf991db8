//! Host selection criteria shared by Cluster scopes and PeerPolicy selectors
//! (hostname regexes, CIDRs, IDC, location prefix), compiled once per change
//! of the objects so matching an announcing host is cheap.

use super::resource::HostInfo;
use darter_crds::cluster::ClusterScopes;
use ipnet::IpNet;
use regex::Regex;
use std::str::FromStr;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScopeError {
    #[error("{owner}: hostname regex {pattern:?}: {reason}")]
    Regex {
        owner: String,
        pattern: String,
        reason: String,
    },
    #[error("{owner}: {cidr:?} is not a CIDR")]
    Cidr { owner: String, cidr: String },
}

/// Whether `have` holds every label of `want` with the same value.
pub fn labels_match(
    want: &std::collections::BTreeMap<String, String>,
    have: &std::collections::BTreeMap<String, String>,
) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

pub fn location_parts(l: &str) -> Vec<String> {
    l.split('|').map(str::to_string).collect()
}

#[derive(Debug, Default)]
pub struct Scopes {
    pub hostnames: Vec<Regex>,
    pub cidrs: Vec<IpNet>,
    pub idc: Option<String>,
    /// Location elements, most general first.
    pub location: Vec<String>,
}

impl Scopes {
    /// Compiles `s`; a bad regex or CIDR is an error naming `owner` (the CRD
    /// schema refuses both, so this is for standalone YAML).
    pub fn compile(owner: &str, s: &ClusterScopes) -> Result<Self, ScopeError> {
        let hostnames = s
            .hostnames
            .iter()
            .map(|p| {
                Regex::new(p).map_err(|e| ScopeError::Regex {
                    owner: owner.to_string(),
                    pattern: p.clone(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        let cidrs = s
            .cidrs
            .iter()
            .map(|c| {
                IpNet::from_str(c).map_err(|_| ScopeError::Cidr {
                    owner: owner.to_string(),
                    cidr: c.clone(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            hostnames,
            cidrs,
            idc: s.idc.clone(),
            location: s
                .location
                .as_deref()
                .map(location_parts)
                .unwrap_or_default(),
        })
    }

    pub fn cidr_matches(&self, host: &HostInfo) -> bool {
        self.cidrs.iter().any(|n| n.contains(&host.ip))
    }

    pub fn hostname_matches(&self, host: &HostInfo) -> bool {
        self.hostnames.iter().any(|r| r.is_match(&host.hostname))
    }

    pub fn idc_matches(&self, host: &HostInfo) -> bool {
        matches!((&self.idc, &host.idc), (Some(want), Some(have)) if want == have)
    }

    /// Leading location elements the host shares with the scope.
    pub fn location_common(&self, host: &HostInfo) -> usize {
        let Some(have) = &host.location else {
            return 0;
        };
        self.location
            .iter()
            .zip(location_parts(have).iter())
            .take_while(|(a, b)| a == b)
            .count()
    }

    /// Whether every criterion given matches (a host in or below the
    /// location matches it); no criteria match every host.
    pub fn all_match(&self, host: &HostInfo) -> bool {
        (self.hostnames.is_empty() || self.hostname_matches(host))
            && (self.cidrs.is_empty() || self.cidr_matches(host))
            && (self.idc.is_none() || self.idc_matches(host))
            && (self.location.is_empty() || self.location_common(host) == self.location.len())
    }
}
