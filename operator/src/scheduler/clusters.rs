//! Which Cluster an agent belongs to, decided when it announces. Each Cluster
//! has scopes (hostname regexes, CIDRs, IDC, location prefix) and may be the
//! default; an agent goes to the cluster whose scopes match it best, scored as
//! Dragonfly's manager does (CIDR 0.3, hostname 0.3, location 0.2 by matched
//! prefix share, IDC 0.15, default 0.05), ties broken by cluster name so every
//! replica decides the same. An agent that matches none joins the default
//! cluster (the first default by name); with no default it has no cluster.

use super::resource::{HostInfo, HostKind, ParentLimits};
pub use super::scopes::ScopeError;
use super::scopes::{Scopes, labels_match};
use darter_crds::ClusterSpec;
use darter_crds::cluster::SchedulingSettings;
use std::collections::BTreeMap;

const CIDR_WEIGHT: f64 = 0.3;
const HOSTNAME_WEIGHT: f64 = 0.3;
const LOCATION_WEIGHT: f64 = 0.2;
const IDC_WEIGHT: f64 = 0.15;
const DEFAULT_WEIGHT: f64 = 0.05;

struct Compiled {
    name: String,
    is_default: bool,
    scopes: Scopes,
    scheduling: SchedulingSettings,
    seed_nodes: Vec<String>,
    seed_labels: BTreeMap<String, String>,
}

/// The clusters' scopes, compiled once per change of the Cluster objects.
#[derive(Default)]
pub struct ClusterMatcher {
    clusters: Vec<Compiled>,
}

impl ClusterMatcher {
    /// Compiles `(name, spec)` pairs; a bad regex or CIDR is an error naming it
    /// (the CRD schema refuses both, so this is for standalone YAML).
    pub fn new<'a>(
        clusters: impl IntoIterator<Item = (&'a str, &'a ClusterSpec)>,
    ) -> Result<Self, ScopeError> {
        let mut out = Vec::new();
        for (name, spec) in clusters {
            out.push(Compiled {
                name: name.to_string(),
                is_default: spec.is_default,
                scopes: Scopes::compile(&format!("cluster {name}"), &spec.scopes)?,
                scheduling: spec.scheduling.clone(),
                seed_nodes: spec.seed_peers.node_names.clone(),
                seed_labels: spec.seed_peers.node_selector.clone(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self { clusters: out })
    }

    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }

    fn score(c: &Compiled, host: &HostInfo) -> f64 {
        let s = &c.scopes;
        let mut score = 0.0;
        if s.cidr_matches(host) {
            score += CIDR_WEIGHT;
        }
        if s.hostname_matches(host) {
            score += HOSTNAME_WEIGHT;
        }
        if s.idc_matches(host) {
            score += IDC_WEIGHT;
        }
        if !s.location.is_empty() {
            let common = s.location_common(host);
            // A scope's location matches a host in it or below it.
            if common == s.location.len() {
                score += LOCATION_WEIGHT;
            } else {
                score += LOCATION_WEIGHT * common as f64 / s.location.len() as f64 * 0.5;
            }
        }
        score
    }

    /// Places `host`: its cluster (the best match, or `fallback` while there
    /// are no clusters at all), and that cluster's settings: parent limits,
    /// seed role for the nodes its `seedPeers` names or selects by label,
    /// and upload slots capped by its per-kind limit. `false` when clusters
    /// exist but none takes the host.
    pub fn assign(&self, host: &mut HostInfo, fallback: &str) -> bool {
        if self.is_empty() {
            host.cluster = fallback.to_string();
            return true;
        }
        let Some(name) = self.select(host) else {
            return false;
        };
        host.cluster = name.to_string();
        let Some(c) = self.clusters.iter().find(|c| c.name == name) else {
            return true;
        };
        let s = &c.scheduling;
        host.parent_limits = Some(ParentLimits {
            candidates: s.candidate_parent_limit as usize,
            sample: s.filter_parent_limit as usize,
        });
        let labelled = !c.seed_labels.is_empty() && labels_match(&c.seed_labels, &host.node_labels);
        if labelled || c.seed_nodes.contains(&host.hostname) {
            host.kind = HostKind::Seed;
        }
        let cap = match host.kind {
            HostKind::Seed => s.seed_upload_slots,
            HostKind::Normal => s.normal_upload_slots,
        };
        host.upload_slots = host.upload_slots.min(cap);
        true
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

    fn spec(yaml: &str) -> ClusterSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn host(ip: &str, name: &str, idc: Option<&str>, loc: Option<&str>) -> HostInfo {
        HostInfo {
            idc: idc.map(Into::into),
            location: loc.map(Into::into),
            ..HostInfo::test(ip, name)
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

    #[test]
    fn a_cluster_gives_its_hosts_limits_seed_roles_and_slot_caps() {
        let east = spec(
            "scopes: {hostnames: ['^east-']}\n\
             scheduling: {candidateParentLimit: 2, filterParentLimit: 40, normalUploadSlots: 5, seedUploadSlots: 500}\n\
             seedPeers: {nodeNames: [east-seed], nodeSelector: {role: seed}}",
        );
        let m = ClusterMatcher::new([("east", &east)]).unwrap();
        let mut plain = HostInfo {
            upload_slots: 50,
            ..host("10.0.0.1", "east-1", None, None)
        };
        assert!(m.assign(&mut plain, "fallback"));
        assert_eq!(plain.cluster, "east");
        assert_eq!(
            plain.parent_limits,
            Some(ParentLimits {
                candidates: 2,
                sample: 40
            })
        );
        assert_eq!((plain.kind, plain.upload_slots), (HostKind::Normal, 5));
        let mut named = HostInfo {
            upload_slots: 50,
            ..host("10.0.0.2", "east-seed", None, None)
        };
        assert!(m.assign(&mut named, "fallback"));
        assert_eq!((named.kind, named.upload_slots), (HostKind::Seed, 50));
        let mut by_label = HostInfo {
            node_labels: BTreeMap::from([("role".to_string(), "seed".to_string())]),
            ..host("10.0.0.3", "east-3", None, None)
        };
        assert!(m.assign(&mut by_label, "fallback"));
        assert_eq!(by_label.kind, HostKind::Seed);
        let mut stranger = host("10.0.0.4", "west-1", None, None);
        assert!(!m.assign(&mut stranger, "fallback"));
        let none = ClusterMatcher::default();
        assert!(none.assign(&mut stranger, "fallback"));
        assert_eq!(
            (stranger.cluster.as_str(), stranger.parent_limits),
            ("fallback", None)
        );
    }
}
