//! Which Cluster an agent belongs to, decided when it announces. Each Cluster
//! has scopes (hostname regexes, CIDRs, IDC, location prefix) and may be the
//! default; an agent goes to the cluster whose scopes match it best, scored as
//! Dragonfly's manager does (CIDR 0.3, hostname 0.3, location 0.2 by matched
//! prefix share, IDC 0.15, default 0.05), ties broken by cluster name so every
//! replica decides the same. An agent that matches none joins the default
//! cluster (the first default by name); with no default it has no cluster.

use super::resource::HostInfo;
use darter_crds::ClusterSpec;
use ipnet::IpNet;
use regex::Regex;
use std::str::FromStr;
use thiserror::Error;

const CIDR_WEIGHT: f64 = 0.3;
const HOSTNAME_WEIGHT: f64 = 0.3;
const LOCATION_WEIGHT: f64 = 0.2;
const IDC_WEIGHT: f64 = 0.15;
const DEFAULT_WEIGHT: f64 = 0.05;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScopeError {
    #[error("cluster {cluster}: hostname regex {pattern:?}: {reason}")]
    Regex {
        cluster: String,
        pattern: String,
        reason: String,
    },
    #[error("cluster {cluster}: {cidr:?} is not a CIDR")]
    Cidr { cluster: String, cidr: String },
}

struct Compiled {
    name: String,
    is_default: bool,
    hostnames: Vec<Regex>,
    cidrs: Vec<IpNet>,
    idc: Option<String>,
    location: Vec<String>,
}

/// The clusters' scopes, compiled once per change of the Cluster objects.
#[derive(Default)]
pub struct ClusterMatcher {
    clusters: Vec<Compiled>,
}

fn location_parts(l: &str) -> Vec<String> {
    l.split('|').map(str::to_string).collect()
}

impl ClusterMatcher {
    /// Compiles `(name, spec)` pairs; a bad regex or CIDR is an error naming it
    /// (the CRD schema refuses both, so this is for standalone YAML).
    pub fn new<'a>(
        clusters: impl IntoIterator<Item = (&'a str, &'a ClusterSpec)>,
    ) -> Result<Self, ScopeError> {
        let mut out = Vec::new();
        for (name, spec) in clusters {
            let s = &spec.scopes;
            let hostnames = s
                .hostnames
                .iter()
                .map(|p| {
                    Regex::new(p).map_err(|e| ScopeError::Regex {
                        cluster: name.to_string(),
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
                        cluster: name.to_string(),
                        cidr: c.clone(),
                    })
                })
                .collect::<Result<_, _>>()?;
            out.push(Compiled {
                name: name.to_string(),
                is_default: spec.is_default,
                hostnames,
                cidrs,
                idc: s.idc.clone(),
                location: s
                    .location
                    .as_deref()
                    .map(location_parts)
                    .unwrap_or_default(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self { clusters: out })
    }

    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }

    fn score(c: &Compiled, host: &HostInfo) -> f64 {
        let mut score = 0.0;
        if c.cidrs.iter().any(|n| n.contains(&host.ip)) {
            score += CIDR_WEIGHT;
        }
        if c.hostnames.iter().any(|r| r.is_match(&host.hostname)) {
            score += HOSTNAME_WEIGHT;
        }
        if let (Some(want), Some(have)) = (&c.idc, &host.idc)
            && want == have
        {
            score += IDC_WEIGHT;
        }
        if !c.location.is_empty()
            && let Some(have) = &host.location
        {
            let have = location_parts(have);
            let common = c
                .location
                .iter()
                .zip(&have)
                .take_while(|(a, b)| a == b)
                .count();
            // A scope's location matches a host in it or below it.
            if common == c.location.len() {
                score += LOCATION_WEIGHT;
            } else {
                score += LOCATION_WEIGHT * common as f64 / c.location.len() as f64 * 0.5;
            }
        }
        score
    }

    /// The cluster `host` belongs to.
    pub fn select(&self, host: &HostInfo) -> Option<&str> {
        let best = self
            .clusters
            .iter()
            .map(|c| (Self::score(c, host), c))
            .filter(|(s, _)| *s > 0.0)
            .map(|(s, c)| (s + if c.is_default { DEFAULT_WEIGHT } else { 0.0 }, c))
            // Sorted by name: on equal scores the first name wins.
            .fold(None::<(f64, &Compiled)>, |best, (s, c)| match best {
                Some((bs, _)) if bs >= s => best,
                _ => Some((s, c)),
            });
        best.map(|(_, c)| c.name.as_str()).or_else(|| {
            self.clusters
                .iter()
                .find(|c| c.is_default)
                .map(|c| c.name.as_str())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::resource::HostKind;

    fn spec(yaml: &str) -> ClusterSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn host(ip: &str, name: &str, idc: Option<&str>, loc: Option<&str>) -> HostInfo {
        HostInfo {
            id: format!("{ip}-{name}"),
            ip: ip.parse().unwrap(),
            hostname: name.into(),
            upload_port: 1,
            data_port: 2,
            kind: HostKind::Normal,
            idc: idc.map(Into::into),
            location: loc.map(Into::into),
            upload_slots: 1,
            disable_shared: false,
            cluster: String::new(),
        }
    }

    #[test]
    fn scopes_decide_and_ties_break_by_name() {
        let east = spec("scopes: {hostnames: ['^east-'], cidrs: ['10.1.0.0/16']}");
        let west = spec("scopes: {cidrs: ['10.2.0.0/16'], location: 'us|west'}");
        let lab = spec("scopes: {idc: lab}\nisDefault: true");
        let twin = spec("scopes: {cidrs: ['10.2.0.0/16'], location: 'us|west'}");
        let m = ClusterMatcher::new([
            ("east", &east),
            ("west", &west),
            ("lab", &lab),
            ("a-west-twin", &twin),
        ])
        .unwrap();
        assert_eq!(
            m.select(&host("10.1.2.3", "east-1", None, None)),
            Some("east")
        );
        // Hostname alone is enough.
        assert_eq!(
            m.select(&host("192.168.0.1", "east-9", None, None)),
            Some("east")
        );
        // Equal scores: the name that sorts first, every time.
        for _ in 0..3 {
            assert_eq!(
                m.select(&host("10.2.0.9", "w", None, Some("us|west|r1"))),
                Some("a-west-twin")
            );
        }
        assert_eq!(
            m.select(&host("172.16.0.1", "x", Some("lab"), None)),
            Some("lab")
        );
        // Nothing matches: the default cluster.
        assert_eq!(m.select(&host("172.16.0.1", "x", None, None)), Some("lab"));
    }

    #[test]
    fn no_default_means_no_cluster_and_bad_scopes_are_named() {
        let east = spec("scopes: {cidrs: ['10.1.0.0/16']}");
        let m = ClusterMatcher::new([("east", &east)]).unwrap();
        assert_eq!(m.select(&host("10.9.0.1", "x", None, None)), None);
        let bad = spec("scopes: {hostnames: ['node-(east']}");
        let e = ClusterMatcher::new([("b", &bad)]).err().unwrap();
        assert!(e.to_string().contains("node-(east"), "{e}");
        let bad = spec("scopes: {cidrs: ['10.0.0.0/33']}");
        assert!(matches!(
            ClusterMatcher::new([("c", &bad)]).err().unwrap(),
            ScopeError::Cidr { .. }
        ));
    }
}
