use proptest::prelude::*;
use suanli_serve::{usage_of_body, StreamMeter, Usage};

fn chunk(i: u64, usage: Option<(u64, u64)>) -> String {
    let mut v = serde_json::json!({"id": "c", "choices": [{"index": 0, "delta": {"content": format!("t{i} ")}}]});
    if let Some((p, c)) = usage {
        v["usage"] =
            serde_json::json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c});
    }
    format!("data: {v}\n\n")
}

/// A stream of `n` tokens, with usage per chunk (`continuous`), at the end
/// (`final_usage`), or none.
fn stream(n: u64, continuous: bool, final_usage: bool) -> String {
    let mut s = String::from(": keep-alive\n\n");
    for i in 0..n {
        s += &chunk(i, continuous.then_some((12, i + 1)));
    }
    if final_usage {
        s += &format!(
            "data: {}\r\n\r\n",
            serde_json::json!({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": n}})
        );
    }
    s + "data: [DONE]\n\n"
}

#[test]
fn the_final_usage_chunk_is_what_is_billed() {
    let mut m = StreamMeter::new();
    m.feed(stream(5, false, true).as_bytes());
    let r = m.metered();
    assert_eq!(
        r.usage,
        Usage {
            prompt_tokens: 12,
            completion_tokens: 5
        }
    );
    assert!(r.complete && !r.estimated);
}

#[test]
fn a_stream_cut_midway_is_billed_for_what_it_delivered() {
    let full = stream(10, true, false);
    // Cut inside the seventh chunk: six whole chunks delivered.
    let cut = full.match_indices("data: ").nth(6).unwrap().0 + 20;
    let mut m = StreamMeter::new();
    m.feed(&full.as_bytes()[..cut]);
    let r = m.metered();
    assert_eq!(
        r.usage,
        Usage {
            prompt_tokens: 12,
            completion_tokens: 6
        }
    );
    assert!(!r.complete && !r.estimated);
    // Without any usage: the chunks are counted, and said to be.
    let mut m = StreamMeter::new();
    let plain = stream(10, false, false);
    let cut = plain.match_indices("data: ").nth(4).unwrap().0;
    m.feed(&plain.as_bytes()[..cut]);
    let r = m.metered();
    assert_eq!(
        r.usage,
        Usage {
            prompt_tokens: 0,
            completion_tokens: 4
        }
    );
    assert!(r.estimated && !r.complete);
}

#[test]
fn garbage_and_overlong_events_are_skipped_not_fatal() {
    let mut m = StreamMeter::new();
    m.feed(b"data: {not json\n\nevent: x\ndata\n\n");
    m.feed(format!("data: {}\n\n", "x".repeat(2 << 20)).as_bytes());
    m.feed(stream(3, false, true).as_bytes());
    assert_eq!(
        m.metered().usage,
        Usage {
            prompt_tokens: 12,
            completion_tokens: 3
        }
    );
}

#[test]
fn whole_answers_carry_usage_in_the_body() {
    let body = br#"{"id":"x","choices":[{"text":"a"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
    assert_eq!(
        usage_of_body(body),
        Some(Usage {
            prompt_tokens: 3,
            completion_tokens: 1
        })
    );
    assert_eq!(usage_of_body(br#"{"choices":[]}"#), None);
    assert_eq!(usage_of_body(b"<html>"), None);
}

proptest! {
    #[test]
    fn where_the_bytes_are_split_changes_nothing(
        n in 0u64..30, continuous: bool, final_usage: bool,
        cuts in prop::collection::vec(0usize..2000, 0..20),
    ) {
        let s = stream(n, continuous, final_usage);
        let mut whole = StreamMeter::new();
        whole.feed(s.as_bytes());
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (s.len() + 1)).collect();
        cuts.sort_unstable();
        let mut parts = StreamMeter::new();
        let mut at = 0;
        for c in cuts {
            parts.feed(&s.as_bytes()[at..c]);
            at = c;
        }
        parts.feed(&s.as_bytes()[at..]);
        prop_assert_eq!(whole.metered(), parts.metered());
        prop_assert!(whole.metered().complete);
        // By usage or by counting chunks, the whole stream is n tokens.
        prop_assert_eq!(whole.metered().usage.completion_tokens, n);
    }
}
