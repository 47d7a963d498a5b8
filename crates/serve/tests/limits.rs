use proptest::prelude::*;
use suanli_serve::{Limiter, Limits};

const RPM: Limits = Limits {
    requests_per_minute: Some(60),
    tokens_per_minute: None,
};

#[test]
fn requests_per_minute_allows_a_minute_then_one_a_second() {
    let mut l = Limiter::new();
    for _ in 0..60 {
        l.admit("a", RPM, 0).unwrap();
    }
    let r = l.admit("a", RPM, 0).unwrap_err();
    assert_eq!((r.limit, r.retry_after_s), ("requests_per_minute", 1));
    // Another tenant has its own bucket.
    l.admit("b", RPM, 0).unwrap();
    // One request a second comes back.
    assert!(l.admit("a", RPM, 999).is_err());
    l.admit("a", RPM, 1000).unwrap();
    assert!(l.admit("a", RPM, 1500).is_err());
    // Never more than a minute's worth banked.
    let mut l = Limiter::new();
    let mut n = 0;
    while l.admit("a", RPM, 3_600_000).is_ok() {
        n += 1;
    }
    assert_eq!(n, 60);
}

#[test]
fn tokens_are_charged_after_the_answer_and_debt_makes_the_tenant_wait() {
    let tpm = Limits {
        requests_per_minute: None,
        tokens_per_minute: Some(6000),
    };
    let mut l = Limiter::new();
    l.admit("a", tpm, 0).unwrap();
    // One big answer: 9,000 tokens, 3,000 over the bucket.
    l.charge("a", tpm, 9000, 100);
    let r = l.admit("a", tpm, 100).unwrap_err();
    assert_eq!(r.limit, "tokens_per_minute");
    // 3,000 tokens of debt at 100 tokens/s: 30 s (plus the one to go positive).
    assert_eq!(r.retry_after_s, 31);
    assert!(l.admit("a", tpm, 30_000).is_err());
    l.admit("a", tpm, 30_200).unwrap();
    // A refusal does not consume anything.
    let zero = Limits {
        requests_per_minute: Some(0),
        tokens_per_minute: None,
    };
    assert_eq!(l.admit("z", zero, 0).unwrap_err().retry_after_s, 60);
    l.admit("free", Limits::default(), 0).unwrap();
}

#[test]
fn other_routers_traffic_is_charged_and_debt_is_at_most_a_minute() {
    let both = Limits {
        requests_per_minute: Some(60),
        tokens_per_minute: Some(600),
    };
    let mut l = Limiter::new();
    // Another router let in 60 requests: this one's bucket is empty too.
    l.charge_shared("a", both, 60, 0, 0);
    let r = l.admit("a", both, 0).unwrap_err();
    assert_eq!(r.limit, "requests_per_minute");
    // A huge charge from elsewhere (a router long unseen) waits a minute at most.
    l.charge_shared("b", both, 0, 1_000_000, 0);
    let r = l.admit("b", both, 0).unwrap_err();
    assert_eq!((r.limit, r.retry_after_s), ("tokens_per_minute", 61));
    l.admit("b", both, 60_100).unwrap();
    // This router's own answers are charged in full: a 6,000-token answer
    // against 600 a minute is ten minutes of debt.
    l.admit("d", both, 0).unwrap();
    l.charge("d", both, 6_600, 0);
    assert_eq!(l.admit("d", both, 0).unwrap_err().retry_after_s, 601);
    // ...and a shared charge adds nothing below the floor it is already under.
    l.charge_shared("d", both, 0, 1_000, 0);
    assert_eq!(l.admit("d", both, 0).unwrap_err().retry_after_s, 601);
    // No limit, no charge.
    l.charge_shared("c", Limits::default(), 1_000, 1_000, 0);
    l.admit("c", both, 0).unwrap();
}

proptest! {
    #[test]
    fn no_window_of_a_minute_admits_more_than_twice_the_limit(
        rpm in 1u64..200, gaps in prop::collection::vec(0u64..3000, 1..500),
    ) {
        // A token bucket admits at most its burst (one minute's worth) plus
        // what refills in the window: 2 × limit per 60 s.
        let lim = Limits { requests_per_minute: Some(rpm), tokens_per_minute: None };
        let mut l = Limiter::new();
        let mut t = 0u64;
        let mut admitted = Vec::new();
        for g in gaps {
            t += g;
            if l.admit("a", lim, t).is_ok() {
                admitted.push(t);
            }
        }
        for (i, &s) in admitted.iter().enumerate() {
            let within = admitted[i..].iter().take_while(|&&x| x < s + 60_000).count() as u64;
            prop_assert!(within <= 2 * rpm, "{within} in a minute at {rpm}/min");
        }
    }
}
