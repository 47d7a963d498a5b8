//! Tokens a response delivered, read from the OpenAI `usage` field.
//!
//! A whole answer carries `usage` in its JSON body ([`usage_of_body`]). A
//! streamed one (server-sent events) carries it in a chunk: at the end when
//! the request set `stream_options.include_usage`, and in every chunk when
//! it also set `continuous_usage_stats` (vLLM's extension, which the router
//! asks for so that a stream cut off midway still says how far it got).
//! [`StreamMeter`] watches the bytes go by (the caller forwards them
//! untouched) and keeps the last usage seen; without any, it counts the
//! content chunks delivered, one token each (what vLLM and SGLang send),
//! and says the figure is an estimate.

use serde::{Deserialize, Serialize};

/// Tokens of one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// What a response delivered, as far as it is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metered {
    pub usage: Usage,
    /// True when no `usage` was seen and the completion tokens were counted
    /// from the chunks (the prompt tokens are then 0: not known).
    pub estimated: bool,
    /// The stream ended with `data: [DONE]`.
    pub complete: bool,
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<RawUsage>,
    #[serde(default)]
    choices: Option<Vec<serde_json::Value>>,
}

#[derive(Deserialize)]
struct RawUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// The usage of a whole (not streamed) answer's body, if it has one.
pub fn usage_of_body(body: &[u8]) -> Option<Usage> {
    let v: WithUsage = serde_json::from_slice(body).ok()?;
    v.usage.map(|u| Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
    })
}

/// The longest event the meter buffers; a longer one is skipped (its bytes
/// still go to the client, the caller forwards them).
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Watches a server-sent event stream.
#[derive(Debug, Default)]
pub struct StreamMeter {
    line: Vec<u8>,
    data: Vec<u8>,
    overlong: bool,
    usage: Option<Usage>,
    chunks: u64,
    done: bool,
}

impl StreamMeter {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next bytes of the stream, split anywhere.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.line_done(&line);
                line.clear();
                self.line = line;
            } else if self.line.len() < MAX_EVENT_BYTES {
                self.line.push(b);
            } else {
                self.overlong = true;
            }
        }
    }

    fn line_done(&mut self, line: &[u8]) {
        if line.is_empty() {
            // End of an event.
            let data = std::mem::take(&mut self.data);
            if !std::mem::take(&mut self.overlong) {
                self.event(&data);
            }
            return;
        }
        if line.starts_with(b":") {
            return; // a comment
        }
        let (field, value) = match line.iter().position(|&c| c == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        if field == b"data" {
            if self.data.len() + value.len() + 1 > MAX_EVENT_BYTES {
                self.overlong = true;
                return;
            }
            if !self.data.is_empty() {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
        }
    }

    fn event(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if data == b"[DONE]" {
            self.done = true;
            return;
        }
        let Ok(v) = serde_json::from_slice::<WithUsage>(data) else {
            return;
        };
        if let Some(u) = v.usage {
            self.usage = Some(Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
            });
        }
        if v.choices.is_some_and(|c| !c.is_empty()) {
            self.chunks += 1;
        }
    }

    /// What was delivered up to now (call when the stream ended, or was cut).
    pub fn metered(&self) -> Metered {
        match self.usage {
            Some(usage) => Metered {
                usage,
                estimated: false,
                complete: self.done,
            },
            None => Metered {
                usage: Usage {
                    prompt_tokens: 0,
                    completion_tokens: self.chunks,
                },
                estimated: true,
                complete: self.done,
            },
        }
    }
}
