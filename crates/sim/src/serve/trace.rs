//! Request traces for the serving simulator.
//!
//! `azure-llm:FILE`: the Azure LLM inference trace 2023 (Patel et al.,
//! "Splitwise", ISCA 2024; CC BY 4.0): `TIMESTAMP,ContextTokens,GeneratedTokens`
//! with `TIMESTAMP` as `YYYY-MM-DD HH:MM:SS.fffffff`. Arrival times become
//! microseconds (the fraction truncated) after the first request. A trace
//! may span at most [`MAX_SPAN_DAYS`] days (the simulator ticks every
//! second, so a mistyped year is an error, not a run of years).
//! Every error names the file, the line and the column.

use std::path::Path;

/// One request: when it arrives and its token counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Microseconds after the trace's first request.
    pub at_us: u64,
    /// Prompt (input) tokens.
    pub prompt: u32,
    /// Generated (output) tokens, at least 1.
    pub output: u32,
}

/// A trace: requests sorted by arrival.
#[derive(Clone, Debug)]
pub struct RequestTrace {
    pub name: String,
    pub requests: Vec<Request>,
}

/// The trace kinds `--trace KIND:FILE` accepts.
pub const SERVE_TRACE_KINDS: &[&str] = &["azure-llm"];

/// The longest span a trace may cover.
pub const MAX_SPAN_DAYS: u64 = 31;

/// The largest prompt or output a request may name (tokens).
pub const MAX_TOKENS: u32 = 10_000_000;

impl RequestTrace {
    /// `KIND:FILE`, e.g. `azure-llm:../shared/traces/azure-llm-2023/AzureLLMInferenceTrace_code.csv`.
    pub fn read_spec(spec: &str) -> Result<Self, String> {
        let Some((kind, file)) = spec.split_once(':') else {
            return Err(format!(
                "--trace {spec:?}: expected KIND:FILE with KIND one of {}",
                SERVE_TRACE_KINDS.join(", ")
            ));
        };
        match kind {
            "azure-llm" => Self::read_azure(Path::new(file)),
            _ => Err(format!(
                "--trace {spec:?}: unknown kind {kind:?}; expected one of {}",
                SERVE_TRACE_KINDS.join(", ")
            )),
        }
    }

    pub fn read_azure(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse_azure(&path.display().to_string(), &text)
    }

    pub fn parse_azure(name: &str, text: &str) -> Result<Self, String> {
        let mut lines = text.lines().enumerate();
        let header = lines
            .next()
            .map(|(_, l)| l.trim_end_matches('\r'))
            .ok_or_else(|| {
                format!(
                    "{name}: empty file; expected a header TIMESTAMP,ContextTokens,GeneratedTokens"
                )
            })?;
        let cols: Vec<&str> = header.split(',').map(str::trim).collect();
        let find = |c: &str| {
            cols.iter()
                .position(|h| *h == c)
                .ok_or_else(|| format!("{name}:1: no column {c} in the header {header:?}"))
        };
        let (ts, ctx, gen) = (
            find("TIMESTAMP")?,
            find("ContextTokens")?,
            find("GeneratedTokens")?,
        );
        let mut raw: Vec<(u64, u32, u32, usize)> = Vec::new();
        for (i, line) in lines {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let at = |c: usize| format!("{name}:{}: column {}", i + 1, cols[c]);
            let fields: Vec<&str> = line.split(',').collect();
            if fields.len() != cols.len() {
                return Err(format!(
                    "{name}:{}: {} fields, the header has {}",
                    i + 1,
                    fields.len(),
                    cols.len()
                ));
            }
            let t = parse_timestamp(fields[ts].trim()).map_err(|e| format!("{}: {e}", at(ts)))?;
            let tokens = |c: usize, min: u32| -> Result<u32, String> {
                let v: u32 = fields[c]
                    .trim()
                    .parse()
                    .map_err(|_| format!("{}: {:?} is not a token count", at(c), fields[c]))?;
                if v < min || v > MAX_TOKENS {
                    return Err(format!("{}: {v} is outside {min}..={MAX_TOKENS}", at(c)));
                }
                Ok(v)
            };
            raw.push((t, tokens(ctx, 0)?, tokens(gen, 0)?, i + 1));
        }
        if raw.is_empty() {
            return Err(format!("{name}: no requests"));
        }
        // Sorted in the published files; sorted here whatever the input.
        raw.sort_by_key(|r| r.0);
        let t0 = raw[0].0;
        let last = raw[raw.len() - 1];
        if last.0 - t0 > MAX_SPAN_DAYS * 86_400_000_000 {
            return Err(format!(
                "{name}:{}: column TIMESTAMP: {:.1} days after the first request (line {}); a trace may span at most {MAX_SPAN_DAYS} days",
                last.3,
                (last.0 - t0) as f64 / 86_400e6,
                raw[0].3
            ));
        }
        let requests = raw
            .into_iter()
            .map(|(t, prompt, output, _)| Request {
                at_us: t - t0,
                prompt,
                // A request answered with no token still costs its prefill
                // and one step; the trace has a few.
                output: output.max(1),
            })
            .collect();
        Ok(RequestTrace {
            name: name.to_string(),
            requests,
        })
    }

    /// Seconds from the first arrival to the last.
    pub fn span_s(&self) -> f64 {
        self.requests.last().map_or(0.0, |r| r.at_us as f64 / 1e6)
    }
}

/// `YYYY-MM-DD HH:MM:SS[.fffffff]` → microseconds since 1970 (UTC, civil).
fn parse_timestamp(s: &str) -> Result<u64, String> {
    let err = || format!("{s:?} is not a timestamp YYYY-MM-DD HH:MM:SS.fffffff");
    let (date, time) = s.split_once([' ', 'T']).ok_or_else(err)?;
    let d: Vec<&str> = date.split('-').collect();
    if d.len() != 3 || d[0].len() != 4 || d[1].len() != 2 || d[2].len() != 2 {
        return Err(err());
    }
    let num = |x: &str| -> Result<i64, String> {
        if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        x.parse().map_err(|_| err())
    };
    let (y, m, day) = (num(d[0])?, num(d[1])?, num(d[2])?);
    let date = jiff::civil::Date::new(y as i16, m as i8, day as i8)
        .map_err(|e| format!("{}: {e}", err()))?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<&str> = hms.split(':').collect();
    if t.len() != 3 || t.iter().any(|x| x.len() != 2) {
        return Err(err());
    }
    let (h, mi, sec) = (num(t[0])?, num(t[1])?, num(t[2])?);
    if h > 23 || mi > 59 || sec > 60 {
        return Err(err());
    }
    let mut us = 0i64;
    if !frac.is_empty() {
        num(frac)?;
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
        us = digits.parse().map_err(|_| err())?;
    }
    let epoch = jiff::civil::Date::new(1970, 1, 1).expect("a date");
    let days = (date - epoch).get_days() as i64;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec;
    if secs < 0 {
        return Err(format!("{s:?}: before 1970"));
    }
    Ok(secs as u64 * 1_000_000 + us as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_published_format() {
        let t = RequestTrace::parse_azure(
            "t.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n\
             2023-11-16 18:17:03.9799600,4808,10\n\
             2023-11-16 18:17:04.0319600,3180,0\r\n\
             2023-11-16 18:18:04,1,2\n",
        )
        .unwrap();
        assert_eq!(t.requests.len(), 3);
        assert_eq!(
            t.requests[0],
            Request {
                at_us: 0,
                prompt: 4808,
                output: 10
            }
        );
        assert_eq!(t.requests[1].at_us, 52_000);
        assert_eq!(t.requests[1].output, 1);
        assert_eq!(t.requests[2].at_us, 60_020_040);
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let h = "TIMESTAMP,ContextTokens,GeneratedTokens\n";
        let err =
            |body: &str| RequestTrace::parse_azure("t.csv", &format!("{h}{body}")).unwrap_err();
        assert!(err("2023-11-16 18:17:03.9,x,1\n").starts_with("t.csv:2: column ContextTokens"));
        assert!(err("2023-11-16 18:17:03,1,1\n2023-13-16 18:17:03,1,1\n")
            .starts_with("t.csv:3: column TIMESTAMP"));
        assert!(err("2023-11-16 25:17:03,1,1\n").starts_with("t.csv:2: column TIMESTAMP"));
        assert!(err("2023-11-16 18:17:03,1\n").starts_with("t.csv:2: 2 fields"));
        assert!(err("2023-11-16 18:17:03,1,99999999999\n").contains("column GeneratedTokens"));
        assert!(err("").contains("no requests"));
        assert!(err("2023-11-16 18:17:03,1,1\n2033-11-16 18:17:03,1,1\n")
            .starts_with("t.csv:3: column TIMESTAMP: 3653.0 days"));
        assert!(RequestTrace::parse_azure("t.csv", "a,b\n")
            .unwrap_err()
            .contains("no column TIMESTAMP"));
        assert!(RequestTrace::read_spec("philly:x")
            .unwrap_err()
            .contains("unknown kind"));
        assert!(RequestTrace::read_spec("x.csv")
            .unwrap_err()
            .contains("KIND:FILE"));
        assert!(RequestTrace::read_spec("azure-llm:/nonexistent.csv")
            .unwrap_err()
            .starts_with("/nonexistent.csv"));
    }
}
