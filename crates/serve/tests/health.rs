use suanli_serve::{retryable, Health, ProbeConfig, Replicas, Route};

fn cfg() -> ProbeConfig {
    ProbeConfig {
        initial_delay_ms: 5_000,
        period_ms: 1_000,
        ..ProbeConfig::default()
    }
}

#[test]
fn no_traffic_before_the_probe_answers() {
    let mut r = Replicas::new(cfg(), Route::LeastOutstanding).unwrap();
    r.add(1, 0);
    assert_eq!(r.pick(), None);
    // No probe before the initial delay.
    assert!(r.probes_due(4_999).is_empty());
    assert_eq!(r.probes_due(5_000), vec![1]);
    assert!(r.probes_due(5_500).is_empty(), "one probe a period");
    r.probed(1, false);
    assert_eq!(r.health(1), Some(Health::Starting));
    assert_eq!(r.pick(), None);
    assert_eq!(r.probes_due(6_000), vec![1]);
    r.probed(1, true);
    assert_eq!(r.health(1), Some(Health::Ready));
    assert_eq!(r.pick(), Some(1));
    assert_eq!(r.outstanding(1), Some(1));
}

#[test]
fn a_silent_replica_is_evicted_within_two_probe_periods_and_may_return() {
    let mut r = Replicas::new(ProbeConfig::default(), Route::LeastOutstanding).unwrap();
    for id in [1, 2] {
        r.add(id, 0);
    }
    for id in r.probes_due(0) {
        r.probed(id, true);
    }
    // Replica 2 dies just after its probe at 0: failed probes at 1 s and 2 s.
    for t in [1_000, 2_000] {
        for id in r.probes_due(t) {
            r.probed(id, id == 1);
        }
    }
    assert_eq!(r.health(2), Some(Health::Evicted));
    for _ in 0..10 {
        assert_eq!(r.pick(), Some(1));
    }
    // It answers again: back in.
    for id in r.probes_due(3_000) {
        r.probed(id, true);
    }
    assert_eq!(r.health(2), Some(Health::Ready));
    assert_eq!(r.pick(), Some(2), "the emptiest replica");
}

#[test]
fn a_request_that_never_reached_its_replica_evicts_it_and_may_be_retried() {
    let mut r = Replicas::new(ProbeConfig::default(), Route::LeastOutstanding).unwrap();
    for id in [7, 8] {
        r.add(id, 0);
        r.probes_due(0);
        r.probed(id, true);
    }
    let first = r.pick().unwrap();
    r.finished(first, false);
    assert_eq!(r.health(first), Some(Health::Evicted));
    assert!(retryable(false, 1, 3));
    let second = r.pick().unwrap();
    assert_ne!(first, second);
    assert_eq!(r.outstanding(first), Some(0));
    // A request that reached a replica is never re-sent (it may have run).
    assert!(!retryable(true, 1, 3));
    assert!(!retryable(false, 3, 3));
    // A request that reached it and failed does not evict.
    r.finished(second, true);
    assert_eq!(r.health(second), Some(Health::Ready));
    r.remove(second);
    assert_eq!(r.pick(), None);
    assert!(!r.any_ready());
}

#[test]
fn least_outstanding_spreads_the_load() {
    let mut r = Replicas::new(ProbeConfig::default(), Route::LeastOutstanding).unwrap();
    for id in 0..4 {
        r.add(id, 0);
    }
    for id in r.probes_due(0) {
        r.probed(id, true);
    }
    for _ in 0..40 {
        r.pick().unwrap();
    }
    for id in 0..4 {
        assert_eq!(r.outstanding(id), Some(10));
    }
    // Two finish on replica 3: it gets the next two.
    r.finished(3, true);
    r.finished(3, true);
    assert_eq!((r.pick(), r.pick()), (Some(3), Some(3)));
}

#[test]
fn bad_probe_settings_are_named() {
    let bad = |c: ProbeConfig| Replicas::new(c, Route::RoundRobin).unwrap_err();
    assert!(bad(ProbeConfig {
        period_ms: 0,
        ..cfg()
    })
    .starts_with("period_ms"));
    assert!(bad(ProbeConfig {
        failure_threshold: 0,
        ..cfg()
    })
    .starts_with("failure_threshold"));
    assert!(bad(ProbeConfig {
        initial_delay_ms: u64::MAX,
        ..cfg()
    })
    .starts_with("initial_delay_ms"));
}

#[test]
fn a_draining_replica_takes_no_new_request_and_stays_draining() {
    let mut r = Replicas::new(cfg(), Route::LeastOutstanding).unwrap();
    r.add(1, 0);
    r.add(2, 0);
    for id in r.probes_due(60_000) {
        r.probed(id, true);
    }
    assert_eq!(r.pick(), Some(1));
    r.drain(1);
    // Replica 1 holds a request but is never picked again, and a probe
    // answering does not make it ready again.
    for _ in 0..5 {
        assert_eq!(r.pick(), Some(2));
    }
    r.probed(1, true);
    assert_eq!(r.health(1), Some(Health::Draining));
    assert_eq!(r.outstanding(1), Some(1));
    r.finished(1, true);
    assert_eq!(r.outstanding(1), Some(0));
    let states: Vec<_> = r.iter().map(|(id, h, _)| (id, h)).collect();
    assert_eq!(states, vec![(1, Health::Draining), (2, Health::Ready)]);
}
