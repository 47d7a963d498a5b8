use proptest::prelude::*;
use suanli_serve::{Autoscaler, Picker, Route, ScaleConfig};

fn cfg() -> ScaleConfig {
    ScaleConfig {
        min: 0,
        max: 20,
        ..ScaleConfig::default()
    }
}

/// Ticks every second from `from` to `to` (exclusive) with a constant load,
/// applying each answer at once; the last answer.
fn run(a: &mut Autoscaler, current: &mut u32, from: u64, to: u64, inflight: u32) -> Vec<u32> {
    let mut seen = Vec::new();
    let mut t = from;
    while t < to {
        let s = a.tick(t, inflight, *current);
        *current = s.desired;
        seen.push(s.desired);
        t += 1000;
    }
    seen
}

#[test]
fn a_steady_load_gets_load_over_target_replicas() {
    let mut a = Autoscaler::new(cfg()).unwrap();
    let mut n = 5;
    let seen = run(&mut a, &mut n, 0, 120_000, 20);
    assert!(seen.iter().all(|&d| d == 5), "{seen:?}");
    // 22 in flight wants 6 (ceil 5.5): beyond the 10% band of 5.
    let seen = run(&mut a, &mut n, 120_000, 300_000, 22);
    assert_eq!(*seen.last().unwrap(), 6, "{seen:?}");
}

#[test]
fn a_wish_within_the_tolerance_band_changes_nothing() {
    let mut a = Autoscaler::new(cfg()).unwrap();
    let mut n = 10;
    // 41 in flight wants 11: within 10% of 10.
    let seen = run(&mut a, &mut n, 0, 200_000, 41);
    assert!(seen.iter().all(|&d| d == 10), "{seen:?}");
    // 45 wants 12: outside.
    let seen = run(&mut a, &mut n, 200_000, 400_000, 45);
    assert_eq!(*seen.last().unwrap(), 12);
}

#[test]
fn a_burst_panics_and_is_met_within_the_panic_window() {
    let mut a = Autoscaler::new(cfg()).unwrap();
    let mut n = 1;
    run(&mut a, &mut n, 0, 120_000, 4);
    assert_eq!(n, 1);
    // 40 in flight: the stable window alone would take most of a minute.
    let seen = run(&mut a, &mut n, 120_000, 127_000, 40);
    assert!(a.tick(127_000, 40, n).panic);
    assert_eq!(*seen.last().unwrap(), 10, "{seen:?}");
    assert!(
        seen[0] >= 2,
        "the first tick of the burst scales up: {seen:?}"
    );
    // While panicking the count never goes down, even when the burst ends.
    let seen = run(&mut a, &mut n, 127_000, 150_000, 0);
    assert!(seen.iter().all(|&d| d == 10), "{seen:?}");
}

#[test]
fn scale_down_waits_for_the_down_delay() {
    let mut a = Autoscaler::new(ScaleConfig { min: 1, ..cfg() }).unwrap();
    let mut n = 8;
    run(&mut a, &mut n, 0, 120_000, 32);
    assert_eq!(n, 8);
    // The load falls to a quarter: 2 replicas, but not before 30 s of
    // wishes at most... the stable window also drains slowly.
    let seen = run(&mut a, &mut n, 120_000, 400_000, 8);
    let first_down = seen.iter().position(|&d| d < 8).unwrap();
    assert!(
        first_down >= 30,
        "scaled down after {first_down} s: {seen:?}"
    );
    assert_eq!(*seen.last().unwrap(), 2);
    // Monotone on the way down: no flapping.
    assert!(seen.windows(2).all(|w| w[1] <= w[0]), "{seen:?}");
}

#[test]
fn an_up_delay_ignores_a_short_spike() {
    // The spike stays in the panic window's average for 6 s: a delay longer
    // than that filters it.
    let mut a = Autoscaler::new(ScaleConfig {
        min: 1,
        up_delay_ms: 10_000,
        ..cfg()
    })
    .unwrap();
    let mut n = 1;
    run(&mut a, &mut n, 0, 60_000, 4);
    let seen = run(&mut a, &mut n, 60_000, 62_000, 40);
    assert!(seen.iter().all(|&d| d == 1), "{seen:?}");
    let seen = run(&mut a, &mut n, 62_000, 90_000, 4);
    assert!(seen.iter().all(|&d| d == 1), "{seen:?}");
    // Sustained, it is taken once wished for the whole delay.
    let seen = run(&mut a, &mut n, 90_000, 110_000, 40);
    assert!(seen[..10].iter().all(|&d| d == 1), "{seen:?}");
    assert_eq!(*seen.last().unwrap(), 10, "{seen:?}");
}

#[test]
fn idle_services_go_to_zero_after_the_idle_period_and_wake_at_once() {
    let mut a = Autoscaler::new(ScaleConfig {
        up_delay_ms: 10_000,
        ..cfg()
    })
    .unwrap();
    let mut n = 0;
    // Never used: zero.
    assert_eq!(run(&mut a, &mut n, 0, 5_000, 0), vec![0; 5]);
    // A request at zero: one replica at once despite the up delay.
    assert_eq!(a.tick(5_500, 1, 0).desired, 1);
    n = 1;
    run(&mut a, &mut n, 6_000, 10_000, 1);
    // Idle from 9 s (the last busy tick): one replica until 9 + 120 s.
    let seen = run(&mut a, &mut n, 10_000, 129_000, 0);
    assert!(seen.iter().all(|&d| d == 1), "{seen:?}");
    assert_eq!(a.tick(129_000, 0, 1).desired, 0);
    // A request noted between ticks counts as activity.
    let mut b = Autoscaler::new(cfg()).unwrap();
    b.tick(0, 1, 0);
    b.note_request(100_000);
    assert_eq!(b.tick(121_000, 0, 1).desired, 1);
    assert_eq!(b.tick(220_000, 0, 1).desired, 0);
}

#[test]
fn bad_settings_name_their_field() {
    let bad = |c: ScaleConfig| Autoscaler::new(c).unwrap_err().field;
    assert_eq!(bad(ScaleConfig { max: 0, ..cfg() }), "max");
    assert_eq!(bad(ScaleConfig { min: 30, ..cfg() }), "min");
    assert_eq!(
        bad(ScaleConfig {
            target_inflight: f64::NAN,
            ..cfg()
        }),
        "target_inflight"
    );
    assert_eq!(
        bad(ScaleConfig {
            panic_window_ms: 90_000,
            ..cfg()
        }),
        "panic_window_ms"
    );
    assert_eq!(
        bad(ScaleConfig {
            tolerance: 1.0,
            ..cfg()
        }),
        "tolerance"
    );
    assert_eq!(
        bad(ScaleConfig {
            panic_threshold: 0.5,
            ..cfg()
        }),
        "panic_threshold"
    );
    assert_eq!(
        bad(ScaleConfig {
            idle_ms: 0,
            ..cfg()
        }),
        "idle_ms"
    );
}

proptest! {
    #[test]
    fn answers_stay_within_bounds_and_never_strand_a_request(
        min in 0u32..4, extra in 1u32..10,
        loads in prop::collection::vec((0u32..200, 1u64..5_000), 1..200),
    ) {
        let c = ScaleConfig { min, max: min + extra, ..ScaleConfig::default() };
        let mut a = Autoscaler::new(c.clone()).unwrap();
        let (mut t, mut n) = (0u64, 0u32);
        for (load, dt) in loads {
            t += dt;
            let s = a.tick(t, load, n);
            prop_assert!(s.desired >= c.min && s.desired <= c.max, "{s:?}");
            if load > 0 {
                prop_assert!(s.desired >= 1, "requests in flight and no replica: {s:?}");
            }
            n = s.desired;
        }
    }
}

#[test]
fn least_outstanding_takes_the_emptiest_and_shares_ties() {
    let mut p = Picker::new(Route::LeastOutstanding);
    assert_eq!(p.pick(&[Some(3), Some(1), None, Some(2)]), Some(1));
    assert_eq!(p.pick(&[None, None]), None);
    assert_eq!(p.pick(&[]), None);
    // Ties go round.
    let picks: Vec<_> = (0..6)
        .map(|_| p.pick(&[Some(0), Some(0), Some(0)]).unwrap())
        .collect();
    let mut counts = [0; 3];
    for i in picks {
        counts[i] += 1;
    }
    assert_eq!(counts, [2, 2, 2]);
    // Round robin ignores the load, skips replicas that take no traffic.
    let mut r = Picker::new(Route::RoundRobin);
    let picks: Vec<_> = (0..4)
        .map(|_| r.pick(&[Some(9), None, Some(0)]).unwrap())
        .collect();
    assert_eq!(picks, vec![0, 2, 0, 2]);
    assert_eq!("round-robin".parse::<Route>().unwrap(), Route::RoundRobin);
    assert!("fastest".parse::<Route>().is_err());
}

#[test]
fn zero_comes_after_the_idle_period_even_when_it_is_shorter_than_the_window() {
    let mut a = Autoscaler::new(ScaleConfig {
        idle_ms: 10_000,
        ..cfg()
    })
    .unwrap();
    let mut n = 3;
    run(&mut a, &mut n, 0, 30_000, 12);
    // Busy until 29 s; the stable window still remembers the load at 39 s.
    assert_eq!(a.tick(38_000, 0, 3).desired, 3);
    assert_eq!(a.tick(39_000, 0, 3).desired, 0);
}

#[test]
fn reconfiguring_keeps_the_down_delay() {
    let mut a = Autoscaler::new(ScaleConfig { min: 1, ..cfg() }).unwrap();
    let mut n = 8;
    run(&mut a, &mut n, 0, 120_000, 32);
    run(&mut a, &mut n, 120_000, 125_000, 0);
    a.reconfigure(ScaleConfig { min: 1, ..cfg() }).unwrap();
    // The wishes of the last 30 s still say 8.
    assert_eq!(a.tick(125_000, 0, 8).desired, 8);
    assert_eq!(
        Autoscaler::new(ScaleConfig {
            down_delay_ms: u64::MAX,
            ..cfg()
        })
        .unwrap_err()
        .field,
        "down_delay_ms"
    );
}
