//! Readers for the openb CSVs. The node list has columns
//! `sn,cpu_milli,memory_mib,gpu,model`; the pod list
//! `name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,...` (extra columns
//! such as `qos` or times are accepted and, where known, kept).

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use suanli_core::{ModelSet, Models, NodeSpec, Request, MAX_GPUS_PER_NODE};

/// A problem in a trace file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceError {
    pub file: PathBuf,
    /// 1-based line, 0 when the problem is the file as a whole.
    pub line: usize,
    pub column: Option<String>,
    pub message: String,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(c) = &self.column {
            write!(f, ": column {c}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for TraceError {}

/// One pod of an openb pod list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenbPod {
    pub name: String,
    pub req: Request,
    pub creation_time: Option<i64>,
    pub deletion_time: Option<i64>,
}

/// A node list and a pod list sharing one GPU model registry.
#[derive(Clone, Debug)]
pub struct OpenbTrace {
    pub models: Models,
    pub nodes: Vec<NodeSpec>,
    pub pods: Vec<OpenbPod>,
}

impl OpenbTrace {
    pub fn load(nodes: &Path, pods: &Path) -> Result<OpenbTrace, TraceError> {
        let mut models = Models::new();
        let nodes = read_nodes(nodes, &mut models)?;
        let pods = read_pods(pods, &mut models)?;
        Ok(OpenbTrace {
            models,
            nodes,
            pods,
        })
    }
    pub fn requests(&self) -> Vec<Request> {
        self.pods.iter().map(|p| p.req).collect()
    }
}

/// Streams the rows of a CSV file (RFC 4180: a field may be quoted, and a
/// quoted field may hold commas, doubled quotes and line breaks), with the
/// header resolved to column positions. Fields are trimmed; blank lines are
/// skipped. One record is held at a time.
pub(crate) struct Csv {
    file: PathBuf,
    reader: csv::Reader<Terminated<File>>,
    header: Vec<String>,
    record: csv::StringRecord,
    /// Line where the current record starts; 1 for the header.
    line: usize,
}

pub(crate) struct Row<'a> {
    pub(crate) csv: &'a Csv,
}

/// A reader that adds a final line break when the file lacks one, so every
/// CSV record ends with a consumed `\n`.
///
/// Why: the csv crate's own record positions are wrong after a skipped blank
/// line and with CRLF line ends (rust-csv issues 208 and 395). The line where
/// a record starts is instead computed from the reader's position *after*
/// it, which counts every `\n` consumed: minus the terminator, minus the line
/// breaks inside quoted fields. With `\n` as the only terminator a CRLF
/// file's `\r` stays at the end of the last field, and trimming removes it.
pub(crate) struct Terminated<R> {
    inner: R,
    last: Option<u8>,
    done: bool,
}

impl<R: Read> Read for Terminated<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.last = Some(buf[n - 1]);
            return Ok(n);
        }
        self.done = true;
        if self.last.is_some_and(|b| b != b'\n') {
            buf[0] = b'\n';
            return Ok(1);
        }
        Ok(0)
    }
}

impl Csv {
    pub(crate) fn open(path: &Path, required: &[&str]) -> Result<Csv, TraceError> {
        let err = |line, message: String| TraceError {
            file: path.to_path_buf(),
            line,
            column: None,
            message,
        };
        let f = File::open(path).map_err(|e| err(0, format!("cannot open: {e}")))?;
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_reader(Terminated {
                inner: f,
                last: None,
                done: false,
            });
        let header: Vec<String> = match reader.headers() {
            Err(e) => return Err(err(1, format!("cannot read: {e}"))),
            Ok(h) if h.is_empty() => {
                return Err(err(1, "empty file: expected a header line".into()))
            }
            Ok(h) => h.iter().map(|s| s.trim().to_string()).collect(),
        };
        for r in required {
            if !header.iter().any(|h| h == r) {
                return Err(err(
                    1,
                    format!(
                        "header lacks column {r:?} (expected {}; found {})",
                        required.join(","),
                        header.join(",")
                    ),
                ));
            }
        }
        Ok(Csv {
            file: path.to_path_buf(),
            reader,
            header,
            record: csv::StringRecord::new(),
            line: 1,
        })
    }

    pub(crate) fn error(&self, column: Option<&str>, message: String) -> TraceError {
        TraceError {
            file: self.file.clone(),
            line: self.line,
            column: column.map(str::to_string),
            message,
        }
    }

    pub(crate) fn next_row(&mut self) -> Option<Result<Row<'_>, TraceError>> {
        loop {
            match self.reader.read_record(&mut self.record) {
                Ok(false) => return None,
                Ok(true) => {}
                Err(e) => {
                    // Where the reader began looking for the record: exact
                    // unless blank lines came first.
                    self.line = e.position().map_or(self.line + 1, |p| p.line() as usize);
                    return Some(Err(self.error(None, format!("cannot read: {e}"))));
                }
            }
            let breaks: usize = self.record.iter().map(|f| f.matches('\n').count()).sum();
            self.line = self.reader.position().line() as usize - 1 - breaks;
            // A line of blanks (the reader itself skips empty lines).
            if self.record.len() == 1 && self.record[0].trim().is_empty() {
                continue;
            }
            if self.record.len() != self.header.len() {
                return Some(Err(self.error(
                    None,
                    format!(
                        "{} fields, header has {}",
                        self.record.len(),
                        self.header.len()
                    ),
                )));
            }
            return Some(Ok(Row { csv: self }));
        }
    }
}

impl Row<'_> {
    pub(crate) fn line(&self) -> usize {
        self.csv.line
    }
    pub(crate) fn err(&self, col: &str, message: String) -> TraceError {
        self.csv.error(Some(col), message)
    }
    pub(crate) fn get(&self, col: &str) -> Option<&str> {
        let i = self.csv.header.iter().position(|h| h == col)?;
        self.csv.record.get(i).map(str::trim)
    }
    /// Every field, trimmed, in column order.
    pub(crate) fn fields(&self) -> impl Iterator<Item = &str> {
        self.csv.record.iter().map(str::trim)
    }
    pub(crate) fn str(&self, col: &str) -> &str {
        self.get(col).unwrap_or("")
    }
    pub(crate) fn int(&self, col: &str) -> Result<u64, TraceError> {
        let v = self.str(col);
        v.parse::<u64>().map_err(|_| {
            self.csv.error(
                Some(col),
                format!("expected a non-negative integer, found {v:?}"),
            )
        })
    }
    fn opt_time(&self, col: &str) -> Result<Option<i64>, TraceError> {
        match self.get(col) {
            None | Some("") => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                self.csv
                    .error(Some(col), format!("expected an integer time, found {v:?}"))
            }),
        }
    }
}

/// Read an openb node list.
pub fn read_nodes(path: &Path, models: &mut Models) -> Result<Vec<NodeSpec>, TraceError> {
    let mut csv = Csv::open(path, &["sn", "cpu_milli", "memory_mib", "gpu", "model"])?;
    let mut nodes = Vec::new();
    while let Some(row) = csv.next_row() {
        let row = row?;
        let name = row.str("sn").to_string();
        if name.is_empty() {
            return Err(row.csv.error(Some("sn"), "empty node name".into()));
        }
        let cpu_milli = row.int("cpu_milli")?;
        let memory_mib = row.int("memory_mib")?;
        let gpus = row.int("gpu")?;
        if gpus > MAX_GPUS_PER_NODE as u64 {
            return Err(row.csv.error(
                Some("gpu"),
                format!("{gpus} GPUs; at most {MAX_GPUS_PER_NODE} per node"),
            ));
        }
        let model_name = row.str("model");
        let model = if gpus == 0 {
            None
        } else if model_name.is_empty() {
            return Err(row
                .csv
                .error(Some("model"), format!("node has {gpus} GPUs but no model")));
        } else {
            Some(
                models
                    .intern(model_name)
                    .map_err(|e| row.csv.error(Some("model"), e.to_string()))?,
            )
        };
        nodes.push(NodeSpec {
            name,
            cpu_milli,
            memory_mib,
            gpus: gpus as u8,
            model,
        });
    }
    if nodes.is_empty() {
        return Err(csv.error(None, "no nodes in file".into()));
    }
    Ok(nodes)
}

/// Read an openb pod list. `gpu_spec`, `creation_time` and
/// `deletion_time` are optional, as in the reference simulator: some pod
/// lists of the public release have only
/// `name,cpu_milli,memory_mib,num_gpu,gpu_milli` (any GPU model, no times).
pub fn read_pods(path: &Path, models: &mut Models) -> Result<Vec<OpenbPod>, TraceError> {
    let mut csv = Csv::open(
        path,
        &["name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli"],
    )?;
    let mut pods = Vec::new();
    while let Some(row) = csv.next_row() {
        let row = row?;
        let name = row.str("name").to_string();
        if name.is_empty() {
            return Err(row.csv.error(Some("name"), "empty pod name".into()));
        }
        let cpu = row.int("cpu_milli")?;
        let mem = row.int("memory_mib")?;
        let num_gpu = row.int("num_gpu")?;
        let gpu_milli = row.int("gpu_milli")?;
        let mut set = ModelSet::ANY;
        for m in row.str("gpu_spec").split('|').filter(|s| !s.is_empty()) {
            let id = models
                .intern(m)
                .map_err(|e| row.csv.error(Some("gpu_spec"), e.to_string()))?;
            set = set.with(id);
        }
        let num_gpu32 = u32::try_from(num_gpu).unwrap_or(u32::MAX);
        let milli32 = u32::try_from(gpu_milli).unwrap_or(u32::MAX);
        let req = Request::new(cpu, mem, num_gpu32, milli32, set).map_err(|e| {
            let col = match e {
                suanli_core::RequestError::TooManyGpus(_) => "num_gpu",
                _ => "gpu_milli",
            };
            row.csv.error(Some(col), e.to_string())
        })?;
        let creation_time = row.opt_time("creation_time")?;
        let deletion_time = row.opt_time("deletion_time")?;
        pods.push(OpenbPod {
            name,
            req,
            creation_time,
            deletion_time,
        });
    }
    if pods.is_empty() {
        return Err(csv.error(None, "no pods in file".into()));
    }
    Ok(pods)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: impl AsRef<[u8]>) -> Result<Vec<(usize, Vec<String>)>, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(&p, text).unwrap();
        let mut csv = Csv::open(&p, &["a", "b"]).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        while let Some(row) = csv.next_row() {
            let row = row.map_err(|e| e.to_string())?;
            out.push((row.line(), vec![row.str("a").into(), row.str("b").into()]));
        }
        Ok(out)
    }

    #[test]
    fn quoted_fields_blank_lines_and_line_numbers() {
        let got = rows(
            "\u{feff}a, b\r\n\"x, y\",\"say \"\"hi\"\"\"\r\n\r\n   \n\"two\nlines\", 2\n3,4\n",
        )
        .unwrap();
        let want = [
            (2, ["x, y", "say \"hi\""]),
            (5, ["two\nlines", "2"]),
            (7, ["3", "4"]),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for ((line, fields), (wl, wf)) in got.iter().zip(want) {
            assert_eq!((*line, fields.as_slice()), (wl, &wf.map(String::from)[..]));
        }
    }

    #[test]
    fn a_pod_list_with_only_the_five_required_columns_reads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pods.csv");
        std::fs::write(
            &p,
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,4000,8192,1,500\np1,2000,1024,0,0\n",
        )
        .unwrap();
        let mut models = Models::new();
        let pods = read_pods(&p, &mut models).unwrap();
        assert_eq!(pods.len(), 2);
        assert_eq!(
            (
                pods[0].req.cpu_milli,
                pods[0].req.gpu_milli,
                pods[0].req.num_gpu
            ),
            (4000, 500, 1)
        );
        assert_eq!(pods[0].req.models, ModelSet::ANY, "no gpu_spec: any model");
        assert_eq!((pods[0].creation_time, pods[0].deletion_time), (None, None));
        // A missing required column is still named.
        std::fs::write(&p, "name,cpu_milli,memory_mib,num_gpu\np0,1,1,0\n").unwrap();
        let e = read_pods(&p, &mut models).unwrap_err().to_string();
        assert!(e.contains("header lacks column \"gpu_milli\""), "{e}");
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = rows("a,b\n1,2\n\n1,2,3\n").unwrap_err();
        assert!(e.ends_with("t.csv:4: 3 fields, header has 2"), "{e}");
        let e = rows("a,b\r\n1,2\r\n\r\n\"x\r\ny\",2\r\n1,2,3").unwrap_err();
        assert!(e.ends_with("t.csv:6: 3 fields, header has 2"), "{e}");
        let e = rows("a,c\n1,2\n").unwrap_err();
        assert!(e.contains("t.csv:1: header lacks column \"b\""), "{e}");
        let e = rows("").unwrap_err();
        assert!(e.contains("t.csv:1: empty file"), "{e}");
        let e = rows(b"a,b\n1,2\n\"3\xff\",4\n").unwrap_err();
        assert!(e.contains("t.csv:3: cannot read"), "{e}");
    }
}
