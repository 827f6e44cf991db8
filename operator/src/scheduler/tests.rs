use super::resource::{HostInfo, HostKind, PeerState};
use super::*;

fn host(n: u8, kind: HostKind) -> HostInfo {
    HostInfo {
        id: format!("127.0.0.{n}-node{n}"),
        ip: format!("127.0.0.{n}").parse().unwrap(),
        hostname: format!("node{n}"),
        upload_port: 4000,
        data_port: 4001,
        kind,
        idc: None,
        location: None,
        upload_slots: 200,
        disable_shared: false,
        cluster: String::new(),
        policy: None,
        parent_limits: None,
        node_labels: Default::default(),
    }
}

fn sched_with_hosts(n: u8) -> Scheduler {
    let s = Scheduler::new(SchedulerConfig::default());
    for i in 1..=n {
        s.announce_host(host(i, HostKind::Normal));
    }
    s
}

fn hid(n: u8) -> String {
    format!("127.0.0.{n}-node{n}")
}

fn parents(d: &Decision) -> Vec<String> {
    match d {
        Decision::Parents(c) => c.iter().map(|c| c.peer_id.clone()).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn cold_start_costs_one_origin_fetch() {
    let s = sched_with_hosts(20);
    let mut bts = 0;
    for i in 1..=20u8 {
        let d = s
            .register_peer("t", &format!("p{i}"), &hid(i), Some(100), Some(10))
            .unwrap();
        match d {
            Decision::BackToSource(_) => bts += 1,
            Decision::Parents(ref c) => assert!(!c.is_empty() && c.len() <= 4),
            other => panic!("peer {i}: {other:?}"),
        }
    }
    assert_eq!(bts, 1, "only the first peer goes to the origin");
    assert!(s.all_acyclic());
}

#[test]
fn leech_and_same_host_peers_are_never_parents() {
    let s = sched_with_hosts(3);
    let mut leech = host(4, HostKind::Normal);
    leech.disable_shared = true;
    s.announce_host(leech);
    // The leech fetches first (back to source) and is then never offered.
    assert!(matches!(
        s.register_peer("t", "leech", &hid(4), Some(10), Some(1))
            .unwrap(),
        Decision::BackToSource(_)
    ));
    assert!(
        matches!(
            s.register_peer("t", "a", &hid(1), Some(10), Some(1))
                .unwrap(),
            Decision::BackToSource(_)
        ),
        "a leech holding the task does not count as a holder"
    );
    // Same host as a holder: not a parent either.
    let d = s
        .register_peer("t", "a2", &hid(1), Some(10), Some(1))
        .unwrap();
    assert!(matches!(d, Decision::BackToSource(_)), "{d:?}");
    let d = s
        .register_peer("t", "b", &hid(2), Some(10), Some(1))
        .unwrap();
    let mut got = parents(&d);
    got.sort();
    assert_eq!(
        got,
        vec!["a".to_string(), "a2".to_string()],
        "never the leech"
    );
}

#[test]
fn rescheduling_blocks_the_bad_parent_then_falls_back_to_source() {
    let s = sched_with_hosts(3);
    s.register_peer("t", "a", &hid(1), Some(10), Some(1))
        .unwrap();
    s.peer_succeeded("t", "a", 10, 1).unwrap();
    let d = s
        .register_peer("t", "b", &hid(2), Some(10), Some(1))
        .unwrap();
    assert_eq!(parents(&d), vec!["a".to_string()]);
    s.piece_failed("t", "b", "a").unwrap();
    // The only holder is blocked: wait a few rounds, then go to the origin.
    let mut rounds = 0;
    loop {
        match s.reschedule("t", "b", &[]).unwrap() {
            Decision::Wait => rounds += 1,
            Decision::BackToSource(_) => break,
            other => panic!("{other:?}"),
        }
        assert!(rounds < 10);
    }
    assert_eq!(
        rounds,
        SchedulerConfig::default().retry_back_to_source_limit as usize
    );
    // A new holder on another host is offered to others, not the blocked one.
    let d = s
        .register_peer("t", "c", &hid(3), Some(10), Some(1))
        .unwrap();
    let got = parents(&d);
    assert!(
        got.contains(&"a".to_string()) && got.contains(&"b".to_string()),
        "{got:?}"
    );
}

#[test]
fn upload_slots_limit_children() {
    let s = sched_with_hosts(3);
    let mut tiny = host(9, HostKind::Normal);
    tiny.upload_slots = 1;
    s.announce_host(tiny);
    s.register_peer("t", "src", &hid(9), Some(10), Some(1))
        .unwrap();
    let d = s
        .register_peer("t", "a", &hid(1), Some(10), Some(1))
        .unwrap();
    assert_eq!(parents(&d), vec!["src".to_string()]);
    // src's one slot is taken; b can only use a (which has a parent).
    let d = s
        .register_peer("t", "b", &hid(2), Some(10), Some(1))
        .unwrap();
    assert_eq!(parents(&d), vec!["a".to_string()]);
    // a finishing frees src's slot.
    s.peer_succeeded("t", "a", 10, 1).unwrap();
    assert_eq!(s.host(&hid(9)).unwrap().free_upload_slots(), 1);
}

#[test]
fn empty_tasks_and_unknown_hosts() {
    let s = sched_with_hosts(1);
    assert_eq!(
        s.register_peer("t", "a", &hid(1), Some(0), Some(0))
            .unwrap(),
        Decision::Empty
    );
    assert_eq!(
        s.register_peer("t", "a", "nobody", None, None),
        Err(SchedulerError::UnknownHost("nobody".into()))
    );
}

#[test]
fn seed_choice_is_consistent() {
    let s = sched_with_hosts(2);
    for i in 10..15 {
        s.announce_host(host(i, HostKind::Seed));
    }
    let tasks: Vec<String> = (0..200).map(|i| format!("task{i}")).collect();
    let before: Vec<String> = tasks.iter().map(|t| s.seed_host_for(t).unwrap()).collect();
    let used: std::collections::HashSet<_> = before.iter().collect();
    assert!(used.len() >= 4, "tasks spread over seeds: {used:?}");
    s.leave_host(&hid(12));
    let moved = tasks
        .iter()
        .zip(&before)
        .filter(|(t, b)| s.seed_host_for(t).as_ref() != Some(*b))
        .count();
    let on_removed = before.iter().filter(|b| **b == hid(12)).count();
    assert_eq!(moved, on_removed, "only the removed seed's tasks move");
}

#[test]
fn duplicate_and_late_events_do_not_break_state() {
    let s = sched_with_hosts(2);
    s.register_peer("t", "a", &hid(1), Some(10), Some(1))
        .unwrap();
    s.register_peer("t", "a", &hid(1), Some(10), Some(1))
        .unwrap();
    s.peer_succeeded("t", "a", 10, 1).unwrap();
    s.peer_succeeded("t", "a", 10, 1).unwrap();
    s.peer_failed("t", "a").unwrap();
    let states: HashMap<_, _> = s.task_peers("t").unwrap().into_iter().collect();
    assert_eq!(states["a"], PeerState::Succeeded);
    s.peer_left("t", "a").unwrap();
    assert!(s.peer_left("t", "a").is_err(), "a left peer is unknown");
}

#[test]
fn gc_drops_silent_hosts_and_empty_tasks() {
    let s = Scheduler::new(SchedulerConfig {
        host_ttl: Duration::ZERO,
        ..Default::default()
    });
    s.announce_host(host(1, HostKind::Normal));
    s.register_peer("t", "a", &hid(1), Some(10), Some(1))
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    s.gc();
    assert_eq!(s.host_count(), 0);
    assert_eq!(s.task_count(), 0);
}

#[test]
fn concurrent_scheduling_never_makes_cycles() {
    let s = Arc::new(sched_with_hosts(16));
    let threads: Vec<_> = (0..8u32)
        .map(|th| {
            let s = s.clone();
            std::thread::spawn(move || {
                for round in 0..300u32 {
                    let task = format!("t{}", round % 7);
                    let host = ((round + th) % 16 + 1) as u8;
                    let peer = format!("p{}-{}", th, round % 23);
                    let _ = s.register_peer(&task, &peer, &hid(host), Some(1000), Some(10));
                    match round % 5 {
                        0 => {
                            let _ = s.peer_succeeded(&task, &peer, 1000, 10);
                        }
                        1 => {
                            let _ = s.reschedule(&task, &peer, &[]);
                        }
                        2 => {
                            let _ = s.peer_left(&task, &peer);
                        }
                        _ => {
                            let _ = s.piece_finished(
                                &task,
                                &peer,
                                round % 10,
                                None,
                                Duration::from_millis(5),
                            );
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(s.all_acyclic());
}

#[test]
fn a_peer_high_in_the_dag_gets_peers_that_overtook_it() {
    let s = sched_with_hosts(3);
    let d1 = s
        .register_peer("t", "a", &hid(1), Some(100), Some(10))
        .unwrap();
    assert!(matches!(d1, Decision::BackToSource(_)));
    let d2 = s.register_peer("t", "b", &hid(2), None, None).unwrap();
    assert_eq!(parents(&d2), vec!["a".to_string()]);
    let d3 = s.register_peer("t", "c", &hid(3), None, None).unwrap();
    assert!(parents(&d3).contains(&"b".to_string()), "{d3:?}");
    // c (a child of b) gets ahead of b ...
    for n in 0..6 {
        s.piece_finished("t", "c", n, Some("a"), Duration::from_millis(5))
            .unwrap();
    }
    s.piece_finished("t", "b", 0, Some("a"), Duration::from_millis(5))
        .unwrap();
    // ... so b may now be given c: the stale edge b -> c goes, no cycle forms.
    let again = s.reschedule("t", "b", &[]).unwrap();
    assert!(parents(&again).contains(&"c".to_string()), "{again:?}");
    assert!(s.all_acyclic());
}

#[test]
fn a_child_gets_as_many_parents_as_its_cluster_allows() {
    let s = sched_with_hosts(10);
    for i in 1..=8u8 {
        let _ = s
            .register_peer("t", &format!("p{i}"), &hid(i), Some(100), Some(10))
            .unwrap();
        let _ = s.piece_finished("t", &format!("p{i}"), 0, None, Duration::ZERO);
    }
    let d = s
        .register_peer("t", "p9", &hid(9), Some(100), Some(10))
        .unwrap();
    assert_eq!(parents(&d).len(), 4, "the scheduler's default");
    let mut narrow = host(10, HostKind::Normal);
    narrow.parent_limits = Some(resource::ParentLimits {
        candidates: 2,
        sample: 15,
    });
    s.announce_host(narrow);
    let d = s
        .register_peer("t", "p10", &hid(10), Some(100), Some(10))
        .unwrap();
    assert_eq!(parents(&d).len(), 2, "{d:?}");
}
