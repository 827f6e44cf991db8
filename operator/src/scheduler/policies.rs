//! Which PeerPolicy governs an agent. A policy selects agents by hostname
//! regexes, Node labels, CIDRs, IDC, location prefix and cluster names; every
//! criterion it gives must match. Among the policies that select an agent the
//! most specific wins (criteria weighed hostnames 16, node labels 12, cidrs 8,
//! idc 4, location 2, clusters 1), then the higher `priority`, then the name
//! that sorts first, so every replica decides the same.

use super::resource::HostInfo;
use super::scopes::{ScopeError, Scopes, labels_match};
use darter_common::ByteRate;
use darter_crds::PeerPolicySpec;
use darter_proto::agent::v1::ApplySettings;
use std::str::FromStr;

struct Compiled {
    name: String,
    scopes: Scopes,
    clusters: Vec<String>,
    node_selector: std::collections::BTreeMap<String, String>,
    specificity: u32,
    priority: i32,
    settings: ApplySettings,
}

/// The winning policy for one host.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict<'a> {
    pub policy: &'a str,
    /// What the agent is told; names the policy.
    pub settings: &'a ApplySettings,
}

/// The PeerPolicies, compiled once per change of the objects.
#[derive(Default)]
pub struct PolicyMatcher {
    /// Best first: the first that selects a host wins.
    policies: Vec<Compiled>,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Scope(#[from] ScopeError),
    #[error("peer policy {policy}: {field} {value:?}: {reason}")]
    Rate {
        policy: String,
        field: &'static str,
        value: String,
        reason: String,
    },
}

fn rate(policy: &str, field: &'static str, v: &Option<String>) -> Result<Option<u64>, PolicyError> {
    v.as_deref()
        .map(|s| {
            let bad = |reason: String| PolicyError::Rate {
                policy: policy.to_string(),
                field,
                value: s.to_string(),
                reason,
            };
            match ByteRate::from_str(s) {
                Ok(r) if r.0 == 0 => Err(bad("must be above zero".into())),
                Ok(r) => Ok(r.0),
                Err(e) => Err(bad(e.to_string())),
            }
        })
        .transpose()
}

/// The settings a policy pushes (unset fields leave the agent's config).
pub fn settings_of(name: &str, spec: &PeerPolicySpec) -> Result<ApplySettings, PolicyError> {
    Ok(ApplySettings {
        download_rate_limit: rate(name, "downloadRateLimit", &spec.download_rate_limit)?,
        upload_rate_limit: rate(name, "uploadRateLimit", &spec.upload_rate_limit)?,
        prefetch_rate_limit: None,
        disable_shared: spec.disable_shared,
        upload_slots: spec.upload_slots,
        gc_high_watermark_percent: spec.gc.as_ref().map(|g| u32::from(g.high_percent)),
        gc_low_watermark_percent: spec.gc.as_ref().map(|g| u32::from(g.low_percent)),
        policy: name.to_string(),
    })
}

impl PolicyMatcher {
    /// Compiles `(name, spec)` pairs; an invalid one is an error naming it.
    pub fn new<'a>(
        policies: impl IntoIterator<Item = (&'a str, &'a PeerPolicySpec)>,
    ) -> Result<Self, PolicyError> {
        let mut out = Vec::new();
        for (name, spec) in policies {
            let sel = &spec.selector;
            let s = &sel.scopes;
            let specificity = [
                (!s.hostnames.is_empty(), 16),
                (!sel.node_selector.is_empty(), 12),
                (!s.cidrs.is_empty(), 8),
                (s.idc.is_some(), 4),
                (s.location.is_some(), 2),
                (!sel.clusters.is_empty(), 1),
            ]
            .iter()
            .filter(|(given, _)| *given)
            .map(|(_, w)| w)
            .sum();
            out.push(Compiled {
                name: name.to_string(),
                scopes: Scopes::compile(&format!("peer policy {name}"), s)?,
                clusters: sel.clusters.clone(),
                node_selector: sel.node_selector.clone(),
                specificity,
                priority: spec.priority,
                settings: settings_of(name, spec)?,
            });
        }
        out.sort_by(|a, b| {
            (b.specificity, b.priority)
                .cmp(&(a.specificity, a.priority))
                .then_with(|| a.name.cmp(&b.name))
        });
        Ok(Self { policies: out })
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Policy names, best first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.policies.iter().map(|p| p.name.as_str())
    }

    /// The policy governing `host` (its `cluster` already decided).
    pub fn select(&self, host: &HostInfo) -> Option<Verdict<'_>> {
        self.policies
            .iter()
            .find(|p| {
                p.scopes.all_match(host)
                    && (p.clusters.is_empty() || p.clusters.contains(&host.cluster))
                    && labels_match(&p.node_selector, &host.node_labels)
            })
            .map(|p| Verdict {
                policy: &p.name,
                settings: &p.settings,
            })
    }

    /// What the scheduler itself enforces of the winning policy, whatever the
    /// agent announced: leech mode and upload slots.
    pub fn enforce(&self, host: &mut HostInfo) {
        host.policy = None;
        if let Some(v) = self.select(host) {
            if v.settings.disable_shared == Some(true) {
                host.disable_shared = true;
            }
            if let Some(slots) = v.settings.upload_slots {
                host.upload_slots = slots;
            }
            host.policy = Some(v.policy.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> PeerPolicySpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn host(ip: &str, name: &str, cluster: &str) -> HostInfo {
        HostInfo {
            idc: Some("dc1".into()),
            location: Some("eu|fra|a".into()),
            upload_slots: 10,
            cluster: cluster.into(),
            ..HostInfo::test(ip, name)
        }
    }

    #[test]
    fn the_most_specific_policy_wins_then_priority_then_name() {
        let all = spec("uploadRateLimit: 10MiB/s");
        let east = spec("selector: {clusters: [east]}\nuploadRateLimit: 20MiB/s");
        let frankfurt = spec("selector: {location: 'eu|fra'}\ndownloadRateLimit: 1GiB/s");
        let leech = spec("selector: {hostnames: ['^gpu-']}\ndisableShared: true\nuploadSlots: 3");
        let leech_low = spec("selector: {hostnames: ['^gpu-1']}\nuploadSlots: 1\npriority: -1");
        let m = PolicyMatcher::new([
            ("all", &all),
            ("east", &east),
            ("fra", &frankfurt),
            ("leech", &leech),
            ("leech-low", &leech_low),
        ])
        .unwrap();
        let pick = |h: &HostInfo| m.select(h).map(|v| v.policy.to_string());
        // Location (2) beats cluster (1) beats the catch-all (0).
        assert_eq!(
            pick(&host("10.0.0.1", "cpu-1", "east")).as_deref(),
            Some("fra")
        );
        let mut elsewhere = host("10.0.0.1", "cpu-1", "east");
        elsewhere.location = None;
        assert_eq!(pick(&elsewhere).as_deref(), Some("east"));
        elsewhere.cluster = "west".into();
        assert_eq!(pick(&elsewhere).as_deref(), Some("all"));
        // Equal specificity: the higher priority.
        assert_eq!(
            pick(&host("10.0.0.2", "gpu-1", "west")).as_deref(),
            Some("leech")
        );
        let v = m.select(&host("10.0.0.2", "gpu-7", "west")).unwrap();
        assert_eq!(v.settings.disable_shared, Some(true));
        assert_eq!(v.settings.upload_rate_limit, None);
        assert_eq!(v.settings.policy, "leech");
        let mut h = host("10.0.0.2", "gpu-7", "west");
        m.enforce(&mut h);
        assert!(h.disable_shared);
        assert_eq!((h.upload_slots, h.policy.as_deref()), (3, Some("leech")));
    }

    #[test]
    fn every_given_criterion_must_match() {
        let both = spec("selector: {cidrs: ['10.1.0.0/16'], idc: dc1}\nuploadSlots: 2");
        let m = PolicyMatcher::new([("both", &both)]).unwrap();
        assert!(m.select(&host("10.1.0.5", "a", "c")).is_some());
        assert!(m.select(&host("10.2.0.5", "a", "c")).is_none());
        let mut other_dc = host("10.1.0.5", "a", "c");
        other_dc.idc = Some("dc2".into());
        assert!(m.select(&other_dc).is_none());
        let mut h = host("10.2.0.5", "a", "c");
        m.enforce(&mut h);
        assert_eq!((h.upload_slots, h.policy), (10, None));
    }

    #[test]
    fn node_labels_select_and_outrank_cidrs() {
        let gpu = spec("selector: {nodeSelector: {gpu: 'true'}}\ndisableShared: true");
        let net = spec("selector: {cidrs: ['10.0.0.0/8']}\nuploadSlots: 9");
        let m = PolicyMatcher::new([("gpu", &gpu), ("net", &net)]).unwrap();
        let mut h = host("10.0.0.1", "n1", "c");
        assert_eq!(m.select(&h).map(|v| v.policy), Some("net"));
        h.node_labels.insert("gpu".into(), "true".into());
        assert_eq!(m.select(&h).map(|v| v.policy), Some("gpu"));
    }

    #[test]
    fn bad_policies_are_named() {
        let bad = spec("selector: {hostnames: ['(']}");
        let e = PolicyMatcher::new([("p", &bad)]).err().unwrap().to_string();
        assert!(e.contains("peer policy p") && e.contains("("), "{e}");
        let bad = spec("uploadRateLimit: lots");
        let e = PolicyMatcher::new([("q", &bad)]).err().unwrap().to_string();
        assert!(e.contains("uploadRateLimit"), "{e}");
        let zero = spec("downloadRateLimit: 0MiB/s");
        let e = PolicyMatcher::new([("z", &zero)])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("downloadRateLimit") && e.contains("above zero"),
            "{e}"
        );
    }
}
