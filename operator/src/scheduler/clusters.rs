//! Which Cluster an agent belongs to, decided when it announces. Each Cluster
//! has scopes (hostname regexes, CIDRs, IDC, location prefix) and may be the
//! default; an agent goes to the cluster whose scopes match it best, scored as
//! Dragonfly's manager does (CIDR 0.3, hostname 0.3, location 0.2 by matched
//! prefix share, IDC 0.15, default 0.05), ties broken by cluster name so every
//! replica decides the same. An agent that matches none joins the default
//! cluster (the first default by name); with no default it has no cluster.

use super::resource::HostInfo;
pub use super::scopes::ScopeError;
use super::scopes::Scopes;
use darter_crds::ClusterSpec;

const CIDR_WEIGHT: f64 = 0.3;
const HOSTNAME_WEIGHT: f64 = 0.3;
const LOCATION_WEIGHT: f64 = 0.2;
const IDC_WEIGHT: f64 = 0.15;
const DEFAULT_WEIGHT: f64 = 0.05;

struct Compiled {
    name: String,
    is_default: bool,
    scopes: Scopes,
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

    /// Where `host` goes: the matching cluster, or `fallback` while there are
    /// no clusters at all; `None` when some exist but none takes it.
    pub fn place<'a>(&'a self, host: &HostInfo, fallback: &'a str) -> Option<&'a str> {
        if self.is_empty() {
            Some(fallback)
        } else {
            self.select(host)
        }
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
}
