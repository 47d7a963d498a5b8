//! Readers for the openb CSVs. The node list has columns
//! `sn,cpu_milli,memory_mib,gpu,model`; the pod list
//! `name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,...` (extra columns
//! such as `qos` or times are accepted and, where known, kept).

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
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

/// Streams the rows of a simple CSV (no quoting: openb has none) with the
/// header resolved to column positions.
pub(crate) struct Csv {
    file: PathBuf,
    lines: std::io::Lines<BufReader<File>>,
    header: Vec<String>,
    line: usize,
}

pub(crate) struct Row<'a> {
    pub(crate) csv: &'a Csv,
    fields: Vec<String>,
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
        let mut lines = BufReader::new(f).lines();
        let header = match lines.next() {
            None => return Err(err(1, "empty file: expected a header line".into())),
            Some(Err(e)) => return Err(err(1, format!("cannot read: {e}"))),
            Some(Ok(h)) => h,
        };
        let header: Vec<String> = header
            .trim_end_matches('\r')
            .trim_start_matches('\u{feff}')
            .split(',')
            .map(|s| s.trim().to_string())
            .collect();
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
            lines,
            header,
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
            let l = match self.lines.next()? {
                Ok(l) => l,
                Err(e) => {
                    self.line += 1;
                    return Some(Err(self.error(None, format!("cannot read: {e}"))));
                }
            };
            self.line += 1;
            let l = l.trim_end_matches('\r');
            if l.trim().is_empty() {
                continue;
            }
            let fields: Vec<String> = l.split(',').map(|s| s.trim().to_string()).collect();
            if fields.len() != self.header.len() {
                return Some(Err(self.error(
                    None,
                    format!("{} fields, header has {}", fields.len(), self.header.len()),
                )));
            }
            return Some(Ok(Row { csv: self, fields }));
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
        Some(self.fields[i].as_str())
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

/// Read an openb pod list.
pub fn read_pods(path: &Path, models: &mut Models) -> Result<Vec<OpenbPod>, TraceError> {
    let mut csv = Csv::open(
        path,
        &[
            "name",
            "cpu_milli",
            "memory_mib",
            "num_gpu",
            "gpu_milli",
            "gpu_spec",
        ],
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
