//! Scores a candidate parent for a child (Dragonfly v2.2 weights): finished
//! pieces 0.20, upload success 0.20, free upload slots 0.15, host type 0.15,
//! IDC affinity 0.15, location affinity 0.15.

use super::resource::{Host, HostKind, Peer, PeerState};

const MAX_LOCATION_ELEMENTS: usize = 5;

pub fn score(
    parent: &Peer,
    parent_host: &Host,
    child_host: &Host,
    piece_count: Option<u32>,
) -> f64 {
    0.20 * finished_ratio(parent, piece_count)
        + 0.20 * parent_host.upload_success_ratio()
        + 0.15 * free_upload_ratio(parent_host)
        + 0.15 * host_type(parent_host)
        + 0.15 * idc_affinity(parent_host, child_host)
        + 0.15 * location_affinity(parent_host, child_host)
}

fn finished_ratio(parent: &Peer, piece_count: Option<u32>) -> f64 {
    if parent.state == PeerState::Succeeded {
        return 1.0;
    }
    match piece_count {
        Some(n) if n > 0 => (parent.finished_pieces.len() as f64 / f64::from(n)).min(1.0),
        _ => 0.0,
    }
}

fn free_upload_ratio(h: &Host) -> f64 {
    if h.info.upload_slots == 0 {
        return 0.0;
    }
    f64::from(h.free_upload_slots()) / f64::from(h.info.upload_slots)
}

fn host_type(h: &Host) -> f64 {
    match h.info.kind {
        HostKind::Seed => 1.0,
        HostKind::Normal => 0.5,
    }
}

fn idc_affinity(a: &Host, b: &Host) -> f64 {
    match (&a.info.idc, &b.info.idc) {
        (Some(x), Some(y)) if !x.is_empty() && x.eq_ignore_ascii_case(y) => 1.0,
        _ => 0.0,
    }
}

/// Shared leading `|`-separated elements, out of 5.
fn location_affinity(a: &Host, b: &Host) -> f64 {
    let (Some(x), Some(y)) = (&a.info.location, &b.info.location) else {
        return 0.0;
    };
    let shared = x
        .split('|')
        .zip(y.split('|'))
        .take(MAX_LOCATION_ELEMENTS)
        .take_while(|(p, q)| !p.is_empty() && p.eq_ignore_ascii_case(q))
        .count();
    shared as f64 / MAX_LOCATION_ELEMENTS as f64
}

#[cfg(test)]
mod tests {
    use super::super::resource::HostInfo;
    use super::*;

    fn host(kind: HostKind, idc: &str, loc: &str) -> Host {
        Host::new(HostInfo {
            id: "h".into(),
            ip: "127.0.0.1".parse().unwrap(),
            hostname: "h".into(),
            upload_port: 1,
            data_port: 2,
            kind,
            idc: Some(idc.into()),
            location: Some(loc.into()),
            upload_slots: 10,
            disable_shared: false,
            cluster: String::new(),
            policy: None,
            parent_limits: None,
            node_labels: Default::default(),
        })
    }

    #[test]
    fn affinity_and_type_order_candidates() {
        let child = host(HostKind::Normal, "idc1", "cn|hz|a");
        let near = host(HostKind::Normal, "idc1", "cn|hz|b");
        let far = host(HostKind::Normal, "idc2", "us|sf|a");
        let seed = host(HostKind::Seed, "idc2", "us|sf|a");
        let p = Peer::new("p".into(), "h".into());
        let s = |h: &Host| score(&p, h, &child, Some(10));
        assert!(s(&near) > s(&far));
        assert!(s(&seed) > s(&far));
        assert!((location_affinity(&near, &child) - 0.4).abs() < 1e-9);
        let mut done = Peer::new("d".into(), "h".into());
        done.finished_pieces.extend(0..10);
        assert!(score(&done, &far, &child, Some(10)) > s(&far));
    }
}
