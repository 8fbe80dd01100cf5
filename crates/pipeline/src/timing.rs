//! Where models are timed for latency targets: [`LatencyTimer`] is the one place that decides
//! between the runtimes. libtorch CPU runs in this process ([`crate::measure`]); ONNX Runtime
//! CPU and eager PyTorch CPU run in one long-lived helper process per timing session — a
//! small embedded Python script (`ort_timing.py`, `torch_timing.py`) run by an interpreter
//! that has the `onnxruntime` package (or `torch` and `safetensors`), in a private temporary
//! directory that is its working directory. The helper is driven over stdin/stdout, one JSON
//! object per line: fair-pruner exports one set of models (as ONNX files, or as directories
//! with `model.py` and `model.safetensors` as `apply` writes them) (the reference once, then
//! one group's widths), asks the helper to load them, then runs
//! the same schedule as on libtorch (warm-up, rounds in a rotating order, the stop rule and
//! budget of [`crate::latency`]) by asking for one timed pass at a time, and deletes the
//! set's files before exporting the next. Every request has a deadline; a helper that does
//! not answer in time is stopped. Both runtimes' round-by-round times are summarised and
//! flagged noisy by the same code, so latency tables, their cache, the measured correction
//! and the report treat every runtime alike.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use fair_runtime::Model;
use tch::Device;

use crate::error::PipelineError;
use crate::latency::{Latency, LatencyOptions, measure, schedule};
use crate::latency_table::LatencyRuntime;
use crate::torchrun::PYTHON_ENV;

/// The exit status of a helper when its packages cannot be imported.
const MISSING_EXIT: i32 = 3;

/// What the timing helper of a runtime timed through Python is: its script (embedded; see
/// its header for the protocol), the packages it needs and how the models are exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HelperKind {
    /// The runtime, as `latency-on` names it.
    runtime: &'static str,
    /// The library, as people name it.
    library: &'static str,
    /// The script's text.
    script: &'static str,
    /// The script's file name in its private directory.
    file: &'static str,
    /// The key of the version in the helper's first line (the package timed on).
    hello: &'static str,
    /// The packages to install, as `pip install` takes them.
    pip: &'static str,
    /// The same packages, as messages name them.
    packages: &'static str,
    /// Models exported as ONNX files (else as `model.py` directories).
    onnx: bool,
}

/// The ONNX Runtime helper.
const ORT_HELPER: HelperKind = HelperKind {
    runtime: "onnxruntime-cpu",
    library: "ONNX Runtime",
    script: include_str!("ort_timing.py"),
    file: "ort_timing.py",
    hello: "onnxruntime",
    pip: "onnxruntime numpy",
    packages: "`onnxruntime` and `numpy`",
    onnx: true,
};

/// The eager-PyTorch helper.
const TORCH_HELPER: HelperKind = HelperKind {
    runtime: "pytorch-cpu",
    library: "PyTorch",
    script: include_str!("torch_timing.py"),
    file: "torch_timing.py",
    hello: "torch",
    pip: "torch safetensors",
    packages: "`torch` and `safetensors`",
    onnx: false,
};

/// The helper of `runtime`, for the runtimes timed through Python.
fn helper_kind(runtime: LatencyRuntime) -> Option<HelperKind> {
    match runtime {
        LatencyRuntime::OnnxruntimeCpu => Some(ORT_HELPER),
        LatencyRuntime::PytorchCpu => Some(TORCH_HELPER),
        LatencyRuntime::LibtorchCpu | LatencyRuntime::Cuda => None,
    }
}

/// The interpreters whose helper started in this process, per runtime, with the version
/// each reported: a run probes an interpreter once per runtime.
static PROBED: std::sync::Mutex<Vec<(&'static str, PathBuf, String)>> =
    std::sync::Mutex::new(Vec::new());

/// The version `python`'s helper of `runtime` reported in this process, if it started.
fn probed(runtime: &str, python: &Path) -> Option<String> {
    let probed = PROBED.lock().unwrap_or_else(|e| e.into_inner());
    probed
        .iter()
        .find(|(r, p, _)| *r == runtime && p == python)
        .map(|(_, _, v)| v.clone())
}

/// The Python interpreter ONNX Runtime and eager PyTorch are reached through when none is
/// given:
/// `FAIR_PRUNER_PYTHON`, else `python3` (found on `PATH`).
pub fn default_python() -> PathBuf {
    std::env::var_os(PYTHON_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// How long a timing helper (ONNX Runtime's, eager PyTorch's) may take to answer before it
/// is stopped and the timing
/// fails ([`PipelineError::Timing`] naming what it was doing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelperTimeouts {
    /// Starting the interpreter and importing `onnxruntime` or `torch` (default 120 s).
    pub start: Duration,
    /// Loading one model (creating its session) and running it once (default 120 s per
    /// model of a set).
    pub load_per_model: Duration,
    /// One timed forward pass (default 60 s). A model slower than that allows is given
    /// more: each timed pass of a model may take max(`pass`, 20 × its first run), the first
    /// run being the untimed one made when its set is loaded ([`PASS_PER_FIRST_RUN`]).
    pub pass: Duration,
}

/// How many times its first (untimed) run one timed pass of a model may take, when that is
/// more than [`HelperTimeouts::pass`].
pub const PASS_PER_FIRST_RUN: u32 = 20;

/// The deadline of one timed pass of a model whose first run took `first_ms` milliseconds
/// (if the helper said): max(`pass`, [`PASS_PER_FIRST_RUN`] × the first run).
fn pass_deadline(pass: Duration, first_ms: Option<f64>) -> Duration {
    first_ms
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1e3 * f64::from(PASS_PER_FIRST_RUN)).ok())
        .map_or(pass, |d| d.max(pass))
}

impl Default for HelperTimeouts {
    fn default() -> Self {
        HelperTimeouts {
            start: Duration::from_secs(120),
            load_per_model: Duration::from_secs(120),
            pass: Duration::from_secs(60),
        }
    }
}

/// A runtime that times models interleaved, with what it needs to run: the Python
/// interpreter with `onnxruntime` for [`LatencyRuntime::OnnxruntimeCpu`], with `torch` and
/// `safetensors` for [`LatencyRuntime::PytorchCpu`] (unused by the others) and how long its
/// helper may take ([`HelperTimeouts`]).
///
/// ```
/// use fair_pipeline::{LatencyRuntime, LatencyTimer};
/// let timer = LatencyTimer::new(LatencyRuntime::OnnxruntimeCpu, "/opt/venv/bin/python");
/// assert_eq!(timer.runtime().name(), "onnxruntime-cpu");
/// assert!(LatencyTimer::libtorch_cpu().check_available().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyTimer {
    runtime: LatencyRuntime,
    python: PathBuf,
    timeouts: HelperTimeouts,
}

impl LatencyTimer {
    /// Times on `runtime`; ONNX Runtime and eager PyTorch through the interpreter `python`.
    pub fn new(runtime: LatencyRuntime, python: impl Into<PathBuf>) -> Self {
        LatencyTimer {
            runtime,
            python: python.into(),
            timeouts: HelperTimeouts::default(),
        }
    }

    /// Times on libtorch CPU, in this process.
    pub fn libtorch_cpu() -> Self {
        LatencyTimer::new(LatencyRuntime::LibtorchCpu, default_python())
    }

    /// The same timer with its helper (ONNX Runtime's, eager PyTorch's) stopped after
    /// `timeouts`.
    pub fn with_timeouts(self, timeouts: HelperTimeouts) -> Self {
        LatencyTimer { timeouts, ..self }
    }

    /// The runtime timed on.
    pub fn runtime(&self) -> LatencyRuntime {
        self.runtime
    }

    /// The Python interpreter ONNX Runtime and eager PyTorch are reached through.
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// Whether models can be timed on this runtime here: an error naming what is missing
    /// and what to install or choose instead. ONNX Runtime (or eager PyTorch) is checked by
    /// starting the helper exactly as a timing does (in its private directory) and reading
    /// its answer, which names the `onnxruntime` (or `torch`) version; an interpreter that
    /// passed is not probed again for that runtime in this process.
    pub fn check_available(&self) -> Result<(), PipelineError> {
        self.runtime_version().map(drop)
    }

    /// The version of the runtime's library where it matters for its tables: the
    /// `onnxruntime` (or `torch`) version of the interpreter for ONNX Runtime (or eager
    /// PyTorch), probed once per interpreter, runtime and process
    /// ([`LatencyTimer::check_available`]); `None` for libtorch CPU, which is linked in; on
    /// CUDA the GPU timed on ([`cuda_device_name`]), or an error when libtorch sees no CUDA
    /// device.
    pub fn runtime_version(&self) -> Result<Option<String>, PipelineError> {
        match self.runtime {
            LatencyRuntime::LibtorchCpu => Ok(None),
            LatencyRuntime::OnnxruntimeCpu | LatencyRuntime::PytorchCpu => {
                if let Some(v) = probed(self.runtime.name(), &self.python) {
                    return Ok(Some(v));
                }
                Ok(Some(TimingHelper::start(self)?.version.clone()))
            }
            LatencyRuntime::Cuda => {
                if tch::Cuda::is_available() {
                    Ok(Some(cuda_device_name()))
                } else {
                    Err(cuda_unavailable())
                }
            }
        }
    }

    /// Whether `model` can be timed on this runtime at `batch` with `threads` threads: on ONNX
    /// Runtime (or eager PyTorch), the helper loads it (exported as ONNX, or as `model.py`)
    /// and runs it once, so a model the runtime cannot load fails now, not after hours of
    /// scoring; on libtorch CPU and CUDA, that the runtime is there
    /// ([`LatencyTimer::check_available`]).
    pub fn check_model(
        &self,
        model: &Model,
        batch: usize,
        threads: usize,
    ) -> Result<(), PipelineError> {
        match self.runtime {
            LatencyRuntime::OnnxruntimeCpu | LatencyRuntime::PytorchCpu => {
                let options = LatencyOptions {
                    min_rounds: 1,
                    max_rounds: 1,
                    ..LatencyOptions::default()
                };
                let mut session = self.session(batch, threads, &options)?;
                session.export_and_load(&[model], &|_| "the full model".to_owned())
            }
            _ => self.check_available(),
        }
    }

    /// The helper of this timer's runtime (ONNX Runtime's for a runtime without one, which
    /// never starts a helper).
    fn kind(&self) -> HelperKind {
        helper_kind(self.runtime).unwrap_or(ORT_HELPER)
    }

    /// The error for an interpreter that cannot be run at all.
    fn cannot_run(&self, e: &std::io::Error) -> PipelineError {
        let k = self.kind();
        PipelineError::invalid(
            "latency-on",
            format!(
                "{}: cannot run the Python interpreter '{}' ({e}); {} is reached \
                 through a Python 3 with the {} packages \
                 (`python3 -m pip install {}`): give its path with `latency-python` or \
                 {PYTHON_ENV}, or measure on libtorch CPU (`latency-on` libtorch-cpu)",
                k.runtime,
                self.python.display(),
                k.library,
                k.packages,
                k.pip
            ),
        )
    }

    /// The error for an interpreter that lacks the helper's packages (`stderr`: its import
    /// error).
    fn missing(&self, stderr: &str) -> PipelineError {
        let k = self.kind();
        let python = self.python.display();
        let quoted = shell_quoted(&python.to_string());
        let why = stderr.trim().lines().last().unwrap_or("").trim();
        PipelineError::invalid(
            "latency-on",
            format!(
                "{}: the Python interpreter '{python}' {why}; install them for it \
                 (`{quoted} -m pip install {}`), give an interpreter that has them \
                 with `latency-python` or {PYTHON_ENV}, or measure on libtorch CPU (`latency-on` libtorch-cpu)",
                k.runtime, k.pip
            ),
        )
    }

    /// Times the models of each set interleaved (the first of a set is its reference for
    /// speed-ups), at `batch` with `threads` intra-op threads: per set, one [`Latency`] per
    /// model. `name(set, model)` says what a model is (`the unpruned model`, `the candidate
    /// at ...`), for errors. `options` gives the warm-up, rounds, budget and noise threshold
    /// (its batch sizes are ignored). libtorch runs in this process (its thread count
    /// restored after), on the CPU or on CUDA device 0 (models elsewhere are copied there
    /// first); ONNX Runtime and eager PyTorch run in one helper process, set by set.
    pub fn time(
        &self,
        sets: &[Vec<&Model>],
        name: &dyn Fn(usize, usize) -> String,
        batch: usize,
        threads: usize,
        options: &LatencyOptions,
    ) -> Result<Vec<Vec<Latency>>, PipelineError> {
        let mut session = self.session(batch, threads, options)?;
        for (k, set) in sets.iter().enumerate() {
            session.add(set, &|i| name(k, i))?;
        }
        Ok(session.finish())
    }

    /// A timing session at `batch` with `threads` threads: sets are added and timed one by
    /// one ([`Session::add`]; their models may be dropped right after). Checks the batch,
    /// threads and rounds; on ONNX Runtime or eager PyTorch, starts the helper.
    pub(crate) fn session(
        &self,
        batch: usize,
        threads: usize,
        options: &LatencyOptions,
    ) -> Result<Session, PipelineError> {
        if batch == 0 || threads == 0 {
            return Err(PipelineError::invalid(
                if batch == 0 {
                    "latency-batch"
                } else {
                    "latency-threads"
                },
                "must be at least 1",
            ));
        }
        options.check()?;
        let options = LatencyOptions {
            batch_sizes: vec![batch],
            ..options.clone()
        };
        let kind = match self.runtime {
            LatencyRuntime::LibtorchCpu => SessionKind::Libtorch {
                device: Device::Cpu,
                copies: HashMap::new(),
                _threads: ThreadsSet::to(threads),
            },
            LatencyRuntime::Cuda => {
                if !tch::Cuda::is_available() {
                    return Err(cuda_unavailable());
                }
                SessionKind::Libtorch {
                    device: Device::Cuda(0),
                    copies: HashMap::new(),
                    _threads: ThreadsSet::to(threads),
                }
            }
            LatencyRuntime::OnnxruntimeCpu | LatencyRuntime::PytorchCpu => SessionKind::Helper {
                helper: Box::new(TimingHelper::start(self)?),
                exported: 0,
                references: HashMap::new(),
            },
        };
        Ok(Session {
            kind,
            batch,
            threads,
            options,
            timed: Vec::new(),
        })
    }

    /// A [`PipelineError::Timing`] on this runtime.
    fn failed(&self, detail: String, tail: &str) -> PipelineError {
        PipelineError::Timing {
            runtime: self.runtime.name().to_owned(),
            detail,
            tail: crate::torchrun::tail(tail),
        }
    }
}

/// libtorch's intra-op thread count set for a while, restored when dropped.
pub(crate) struct ThreadsSet(i32);

impl ThreadsSet {
    /// Sets `threads`, remembering the current count.
    fn to(threads: usize) -> Self {
        let before = tch::get_num_threads();
        tch::set_num_threads(threads as i32);
        ThreadsSet(before)
    }
}

impl Drop for ThreadsSet {
    fn drop(&mut self) {
        tch::set_num_threads(self.0);
    }
}

/// Sets of models being timed ([`LatencyTimer::session`]), each when it is added.
pub(crate) struct Session {
    kind: SessionKind,
    batch: usize,
    threads: usize,
    /// The rounds, at the session's batch.
    options: LatencyOptions,
    /// The figures of the sets added so far.
    timed: Vec<Vec<Latency>>,
}

/// Where a [`Session`] times.
enum SessionKind {
    /// libtorch, in this process, on `device` (the CPU, or CUDA device 0).
    Libtorch {
        /// Where the models run: a model elsewhere is copied here before it is timed.
        device: Device,
        /// The copies on `device` of the references (first models of a set) that live
        /// elsewhere, by model identity (kept while the session lasts, like a helper's
        /// exported references).
        copies: HashMap<*const Model, Model>,
        /// The thread count while the session lasts.
        _threads: ThreadsSet,
    },
    /// ONNX Runtime or eager PyTorch, in the helper.
    Helper {
        helper: Box<TimingHelper>,
        /// Models exported so far.
        exported: usize,
        /// The files of the references exported so far, by model identity (kept while the
        /// session lasts).
        references: HashMap<*const Model, String>,
    },
}

impl Session {
    /// Times a set now (its first model is the reference for speed-ups): its figures, one
    /// [`Latency`] per model (also kept for [`Session::finish`]); `name(i)` says what model
    /// `i` is, for errors. The models are not needed after this returns, except a reference
    /// shared with later sets, which must live as long as the session (on a helper it is
    /// exported once).
    pub(crate) fn add(
        &mut self,
        set: &[&Model],
        name: &dyn Fn(usize) -> String,
    ) -> Result<Vec<Latency>, PipelineError> {
        let times = match &mut self.kind {
            SessionKind::Libtorch { device, copies, .. } => {
                let device = *device;
                // Models on the device are timed as they are; the others are copied there:
                // the reference once per session, the rest for this set only.
                let key = |m: &Model| m as *const Model;
                if let Some(&r) = set.first()
                    && r.device() != device
                    && !copies.contains_key(&key(r))
                {
                    copies.insert(key(r), copied_to(r, device, &name(0))?);
                }
                let mut rest = Vec::new();
                for (i, &m) in set.iter().enumerate().skip(1) {
                    rest.push(if m.device() == device {
                        None
                    } else {
                        Some(copied_to(m, device, &name(i))?)
                    });
                }
                let timed: Vec<&Model> = set
                    .iter()
                    .enumerate()
                    .map(|(i, &m)| match (m.device() == device, i) {
                        (true, _) => m,
                        (false, 0) => &copies[&key(m)],
                        (false, _) => rest[i - 1].as_ref().expect("copied above"),
                    })
                    .collect();
                measure(&timed, &self.options)?
                    .into_iter()
                    .map(|mut per_batch| per_batch.remove(0))
                    .collect()
            }
            SessionKind::Helper {
                helper,
                exported,
                references,
            } => {
                let dir = helper.dir.path().to_path_buf();
                let mut files = Vec::new();
                let mut written = Vec::new();
                for (i, &m) in set.iter().enumerate() {
                    let key = m as *const Model;
                    if i == 0
                        && let Some(f) = references.get(&key)
                    {
                        files.push(f.clone());
                        continue;
                    }
                    let file = helper.export(m, exported, &name(i))?;
                    if i == 0 {
                        references.insert(key, file.clone());
                    } else {
                        written.push(file.clone());
                    }
                    files.push(file);
                }
                let input = set
                    .first()
                    .map_or(Vec::new(), |m| m.graph().shape_at(0).to_vec());
                let timed = helper.time_set(
                    &files,
                    &input,
                    self.batch,
                    self.threads,
                    &self.options,
                    name,
                );
                for f in written {
                    remove_export(&dir.join(f));
                }
                timed?
            }
        };
        self.timed.push(times.clone());
        Ok(times)
    }

    /// On ONNX Runtime or eager PyTorch: exports the set and has the helper load it and run each model once,
    /// without timing (its files are deleted after); nothing on libtorch.
    fn export_and_load(
        &mut self,
        set: &[&Model],
        name: &dyn Fn(usize) -> String,
    ) -> Result<(), PipelineError> {
        let SessionKind::Helper {
            helper, exported, ..
        } = &mut self.kind
        else {
            return Ok(());
        };
        let mut files = Vec::new();
        let result = (|| {
            for (i, m) in set.iter().enumerate() {
                files.push(helper.export(m, exported, &name(i))?);
            }
            let input = set
                .first()
                .map_or(Vec::new(), |m| m.graph().shape_at(0).to_vec());
            helper
                .load(&files, &input, self.batch, self.threads, name)
                .map(drop)
        })();
        for f in files {
            remove_export(&helper.dir.path().join(f));
        }
        result
    }

    /// The figures of every set added, in order: one [`Latency`] per model.
    pub(crate) fn finish(self) -> Vec<Vec<Latency>> {
        self.timed
    }
}

/// What the helper answered, or why there is no answer.
enum Answer {
    /// A JSON line.
    Line(String),
    /// No answer within the deadline.
    Late,
    /// Its output closed (it exited).
    Closed,
}

/// A timing helper: one process running `ort_timing.py` (ONNX Runtime) or
/// `torch_timing.py` (eager PyTorch) in a private temporary directory (its working
/// directory, holding the script, its stderr and the exported models; removed when dropped,
/// after the process is stopped).
pub(crate) struct TimingHelper {
    timer: LatencyTimer,
    child: Child,
    /// Its stdin, written by a thread that cannot be killed by SIGPIPE ([`StdinWriter`]).
    stdin: Option<StdinWriter>,
    /// Its stdout, line by line (read by a thread).
    lines: Receiver<String>,
    /// The version of its package it reported (`onnxruntime`, `torch`).
    version: String,
    dir: tempfile::TempDir,
}

/// Deletes an exported model of a helper's directory (an ONNX file or a `model.py`
/// directory) once its set is timed; a failure only leaves it until the directory goes.
fn remove_export(path: &Path) {
    if path.is_dir() {
        let _ = std::fs::remove_dir_all(path);
    } else {
        let _ = std::fs::remove_file(path);
    }
}

impl TimingHelper {
    /// Starts the helper of `timer`'s runtime with its interpreter and waits for its first
    /// line, which names the version of its package (`onnxruntime`, `torch`).
    fn start(timer: &LatencyTimer) -> Result<TimingHelper, PipelineError> {
        let kind = timer.kind();
        let dir = tempfile::Builder::new()
            .prefix(&format!("fair-pruner-{}-", kind.hello))
            .tempdir()
            .map_err(|e| timer.failed(format!("cannot create a temporary directory: {e}"), ""))?;
        let write_failed =
            |e: std::io::Error| timer.failed(format!("cannot write the timing helper: {e}"), "");
        std::fs::write(dir.path().join(kind.file), kind.script).map_err(write_failed)?;
        let stderr = std::fs::File::create(dir.path().join("stderr.txt")).map_err(write_failed)?;
        let mut command = Command::new(&timer.python);
        // In its own process group, so that stopping it stops what it started too (an
        // interpreter behind a wrapper script, for one).
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .arg(kind.file)
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| timer.cannot_run(&e))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (send, lines) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if send
                            .send(String::from_utf8_lossy(&line).into_owned())
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        });
        let mut helper = TimingHelper {
            timer: timer.clone(),
            stdin: child.stdin.take().map(StdinWriter::new),
            child,
            lines,
            version: String::new(),
            dir,
        };
        let doing = format!("starting (importing {})", kind.hello);
        let line = helper.answer(timer.timeouts.start, &doing)?;
        let hello = serde_json::from_str::<serde_json::Value>(line.trim()).ok();
        match hello.as_ref().and_then(|h| h.get(kind.hello)?.as_str()) {
            Some(version) => {
                let mut probed = PROBED.lock().unwrap_or_else(|e| e.into_inner());
                if !probed
                    .iter()
                    .any(|(r, p, _)| *r == kind.runtime && *p == timer.python)
                {
                    probed.push((kind.runtime, timer.python.clone(), version.to_owned()));
                }
                helper.version = version.to_owned();
            }
            None => {
                return Err(helper.not_the_helper(&line, &doing));
            }
        }
        Ok(helper)
    }

    /// The text the helper wrote on stderr so far.
    fn stderr(&self) -> String {
        std::fs::read(self.dir.path().join("stderr.txt"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Writes `model` as the next export (counted by `exported`) into the helper's
    /// directory: an ONNX file `m<exported>.onnx` for ONNX Runtime, a directory
    /// `m<exported>` with `model.py` and `model.safetensors` (as `apply` writes them) for
    /// eager PyTorch; its name there. `what`: the model, for errors.
    fn export(
        &self,
        model: &Model,
        exported: &mut usize,
        what: &str,
    ) -> Result<String, PipelineError> {
        let failed = |file: &str, e: &dyn std::fmt::Display| {
            self.timer
                .failed(format!("cannot write {file} for {what}: {e}"), "")
        };
        let file = if self.timer.kind().onnx {
            let file = format!("m{exported}.onnx");
            let bytes = fair_surgery::onnx_bytes(model, &fair_onnx::ExportOptions::default())?;
            std::fs::write(self.dir.path().join(&file), bytes).map_err(|e| failed(&file, &e))?;
            file
        } else {
            let file = format!("m{exported}");
            let dir = self.dir.path().join(&file);
            std::fs::create_dir(&dir).map_err(|e| failed(&file, &e))?;
            std::fs::write(
                dir.join("model.py"),
                fair_surgery::pytorch_module(model.graph()),
            )
            .map_err(|e| failed(&file, &e))?;
            model
                .save_weights(&dir.join("model.safetensors"))
                .map_err(|e| failed(&file, &e))?;
            file
        };
        *exported += 1;
        Ok(file)
    }

    /// The error for an answer that is not the protocol's.
    fn not_the_helper(&mut self, line: &str, doing: &str) -> PipelineError {
        self.stop();
        let shown: String = line.trim().chars().take(200).collect();
        self.timer.failed(
            format!(
                "the timing helper run by '{}' answered {shown:?} while {doing}, which is not fair-pruner's helper protocol (is '{}' a Python 3 interpreter?)",
                self.timer.python.display(),
                self.timer.python.display()
            ),
            &self.stderr(),
        )
    }

    /// The next line of the helper within `deadline`, or the error saying why there is
    /// none (`doing`: what it was asked to do).
    fn answer(&mut self, deadline: Duration, doing: &str) -> Result<String, PipelineError> {
        match self.next_line(deadline) {
            Answer::Line(l) => Ok(l),
            Answer::Late => {
                self.stop();
                Err(self.timer.failed(
                    format!(
                        "the timing helper run by '{}' gave no answer within {} while {doing}; it was stopped",
                        self.timer.python.display(),
                        seconds(deadline)
                    ),
                    &self.stderr(),
                ))
            }
            Answer::Closed => {
                let status = self.wait_exit();
                let stderr = self.stderr();
                if status.as_ref().and_then(|s| s.code()) == Some(MISSING_EXIT) {
                    return Err(self.timer.missing(&stderr));
                }
                let status = status.map_or("an unknown status".to_owned(), |s| s.to_string());
                Err(self.timer.failed(
                    format!(
                        "the timing helper run by '{}' exited ({status}) while {doing}, without answering",
                        self.timer.python.display()
                    ),
                    &stderr,
                ))
            }
        }
    }

    /// The next line of the helper's output within `deadline`.
    fn next_line(&mut self, deadline: Duration) -> Answer {
        match self.lines.recv_timeout(deadline) {
            Ok(l) => Answer::Line(l),
            Err(RecvTimeoutError::Timeout) => Answer::Late,
            Err(RecvTimeoutError::Disconnected) => Answer::Closed,
        }
    }

    /// The helper's exit status once its output closed (stopped if it does not exit within
    /// a few seconds).
    fn wait_exit(&mut self) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            match self.child.try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => break,
            }
        }
        self.stop();
        None
    }

    /// Stops the helper (kills its process group, or it alone once it was reaped, and reaps
    /// it).
    fn stop(&mut self) {
        // The group first, while the helper still has its stdin (closing it first lets a
        // helper exit on its own and be reaped below before its group is killed). Not
        // reaped yet (a zombie at worst): its pid, the group's id, is still its own.
        #[cfg(unix)]
        if let Ok(None) = self.child.try_wait()
            && let Ok(group) = i32::try_from(self.child.id())
        {
            // SAFETY: kill(2) takes plain integers and touches no memory of this process;
            // `-group` names the helper's own process group (made at spawn).
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `request` and reads the answer within `deadline`: its JSON object, or the
    /// error it reports (for model `i` of the set: `name(i)`).
    fn request(
        &mut self,
        request: &serde_json::Value,
        deadline: Duration,
        doing: &str,
        name: &dyn Fn(usize) -> String,
    ) -> Result<serde_json::Value, PipelineError> {
        // A helper that exited since its last answer is not written to: its status and
        // stderr say why (and the write below could not succeed anyway).
        let exited = matches!(self.child.try_wait(), Ok(Some(_)));
        let sent = match self.stdin.as_ref() {
            Some(stdin) if !exited => stdin.write_line(format!("{request}\n").into_bytes()),
            _ => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        if sent.is_err() {
            // It exited: its status and stderr say why.
            return Err(match self.answer(Duration::from_secs(5), doing) {
                Err(e) => e,
                Ok(line) => self.not_the_helper(&line, doing),
            });
        }
        let line = self.answer(deadline, doing)?;
        let answer: serde_json::Value = match serde_json::from_str(line.trim()) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            _ => return Err(self.not_the_helper(&line, doing)),
        };
        if let Some(error) = answer.get("error") {
            let error = error
                .as_str()
                .map_or_else(|| error.to_string(), str::to_owned);
            let model = answer.get("model").and_then(serde_json::Value::as_u64);
            return Err(self.timer.failed(
                match model {
                    Some(i) => format!(
                        "{} cannot load or run {} ({error}); measure on libtorch CPU \
                         instead (`latency-on` libtorch-cpu)",
                        self.timer.kind().library,
                        name(i as usize)
                    ),
                    None => format!("the timing helper failed while {doing}: {error}"),
                },
                &self.stderr(),
            ));
        }
        Ok(answer)
    }

    /// Loads the set `files` (relative to the helper's directory; model `i` is `name(i)`)
    /// with `threads` intra-op threads, each run once on a random input of `batch` samples
    /// of shape `input`: the milliseconds of each model's first run, where the helper said.
    fn load(
        &mut self,
        files: &[String],
        input: &[usize],
        batch: usize,
        threads: usize,
        name: &dyn Fn(usize) -> String,
    ) -> Result<Vec<Option<f64>>, PipelineError> {
        let load = serde_json::json!({
            "op": "load", "threads": threads, "batch": batch, "input": input, "models": files,
        });
        let doing = format!("loading {}", set_names(files.len(), name));
        let count = u32::try_from(files.len().max(1)).unwrap_or(u32::MAX);
        let answer = self.request(
            &load,
            self.timer.timeouts.load_per_model.saturating_mul(count),
            &doing,
            name,
        )?;
        if answer.get("loaded").and_then(serde_json::Value::as_u64) != Some(files.len() as u64) {
            return Err(self.not_the_helper(&answer.to_string(), &doing));
        }
        let first = answer.get("first_ms").and_then(serde_json::Value::as_array);
        Ok((0..files.len())
            .map(|i| {
                first
                    .and_then(|f| f.get(i))
                    .and_then(serde_json::Value::as_f64)
                    .filter(|ms| ms.is_finite() && *ms > 0.0)
            })
            .collect())
    }

    /// Loads the set `files` (relative to the helper's directory; model `i` is `name(i)`)
    /// and times it with `options`' schedule at `batch` ([`schedule`]): one [`Latency`]
    /// per model.
    fn time_set(
        &mut self,
        files: &[String],
        input: &[usize],
        batch: usize,
        threads: usize,
        options: &LatencyOptions,
        name: &dyn Fn(usize) -> String,
    ) -> Result<Vec<Latency>, PipelineError> {
        let first_ms = self.load(files, input, batch, threads, name)?;
        let t = self.timer.timeouts;
        let mut timed = schedule(files.len(), options, |i, _| {
            let doing = format!("timing {}", name(i));
            let answer = self.request(
                &serde_json::json!({"op": "run", "model": i, "passes": 1}),
                pass_deadline(t.pass, first_ms.get(i).copied().flatten()),
                &doing,
                name,
            )?;
            match answer
                .get("ms")
                .and_then(serde_json::Value::as_array)
                .map(|ms| ms.iter().map(serde_json::Value::as_f64).collect::<Vec<_>>())
                .as_deref()
            {
                Some([Some(ms)]) if ms.is_finite() && *ms > 0.0 => Ok(*ms),
                _ => Err(self.not_the_helper(&answer.to_string(), &doing)),
            }
        })?;
        Ok(timed
            .iter_mut()
            .map(|per_batch| per_batch.remove(0))
            .collect())
    }
}

/// The helper's stdin, written by a dedicated thread that blocks SIGPIPE: a write to a
/// helper that died then fails with `EPIPE` instead of killing fair-pruner, even where the
/// process restores SIGPIPE's default disposition (the CLI does, to exit quietly on a closed
/// stdout). A SIGPIPE raised by a write is sent to the writing thread, where it stays
/// pending, blocked, until the thread ends. Dropping it closes the stdin.
struct StdinWriter {
    /// Lines to write, each answered on `written`.
    lines: std::sync::mpsc::Sender<Vec<u8>>,
    /// The outcome of each write.
    written: Receiver<std::io::Result<()>>,
}

impl StdinWriter {
    /// Starts the thread writing `stdin`.
    fn new(mut stdin: ChildStdin) -> Self {
        let (lines, to_write) = channel::<Vec<u8>>();
        let (done, written) = channel();
        std::thread::spawn(move || {
            block_sigpipe();
            for line in to_write {
                let result = stdin.write_all(&line).and_then(|()| stdin.flush());
                let failed = result.is_err();
                if done.send(result).is_err() || failed {
                    break;
                }
            }
        });
        StdinWriter { lines, written }
    }

    /// Writes `line` (with its newline) and waits until it is written.
    fn write_line(&self, line: Vec<u8>) -> std::io::Result<()> {
        let gone = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        self.lines.send(line).map_err(|_| gone())?;
        self.written.recv().map_err(|_| gone())?
    }
}

/// Blocks SIGPIPE in the calling thread (only in it: other threads, and the process's
/// disposition, are unchanged).
#[cfg(unix)]
fn block_sigpipe() {
    // SAFETY: `set` is a local, initialised by `sigemptyset` before use; `pthread_sigmask`
    // only changes the calling thread's signal mask and the old mask is not asked for.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Nothing to block where there is no SIGPIPE.
#[cfg(not(unix))]
fn block_sigpipe() {}

impl Drop for TimingHelper {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The models of a set of `n` (model `i` is `name(i)`), for messages: all of them up to 3,
/// else the first two and the last with the count (`the full model, group a at width 8, …,
/// group a at width 24 (4 models)`).
fn set_names(n: usize, name: &dyn Fn(usize) -> String) -> String {
    match n {
        0 | 1 => name(0),
        2 => format!("{} and {}", name(0), name(1)),
        3 => format!("{}, {} and {}", name(0), name(1), name(2)),
        _ => format!("{}, {}, …, {} ({n} models)", name(0), name(1), name(n - 1)),
    }
}

/// `text` as one word for a POSIX shell: as it is when it holds only characters no shell
/// treats specially, else in single quotes (a quote inside written `'\''`).
fn shell_quoted(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,=@%".contains(c));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// `d` as people read it: `1.5 s`.
fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// The error for timing on CUDA where libtorch sees no CUDA device.
fn cuda_unavailable() -> PipelineError {
    PipelineError::invalid(
        "latency-on",
        "cuda: libtorch sees no CUDA device here (no NVIDIA GPU or driver, or a libtorch \
         built without CUDA); run on a machine with an NVIDIA GPU and a CUDA build of libtorch \
         2.11.0 (the `torch==2.11.0` wheel for Linux carries one; `LIBTORCH` points at another), \
         measure on libtorch-cpu, onnxruntime-cpu or pytorch-cpu (`latency-on`), or give a \
         table measured on the GPU with `latency-table`",
    )
}

/// A copy of `model` on `device`, to time it there (`what` names it in errors).
fn copied_to(model: &Model, device: Device, what: &str) -> Result<Model, PipelineError> {
    Model::from_tensors(model.graph().clone(), model.named_tensors(), device).map_err(|e| {
        PipelineError::invalid(
            "latency-on",
            format!(
                "cannot copy {what} to {} to time it there: {e}",
                match device {
                    Device::Cuda(n) => format!("CUDA device {n}"),
                    _ => "the CPU".to_owned(),
                }
            ),
        )
    })
}

/// The name of the GPU that CUDA device 0 is, as `nvidia-smi` reports it (e.g. `NVIDIA
/// H100 80GB HBM3`), which keys the latency tables measured on it: the first device of
/// `CUDA_VISIBLE_DEVICES` when that is set (an index or a UUID, as `nvidia-smi -i` takes
/// it); otherwise every GPU's name, which is one name on a machine of one kind of GPU (CUDA
/// may order mixed GPUs otherwise than `nvidia-smi`, so their names are all given, joined
/// by ` or `). `CUDA device 0` where `nvidia-smi` cannot say: tables keyed so may be reused
/// on another GPU of a machine without `nvidia-smi`.
pub fn cuda_device_name() -> String {
    let pinned = std::env::var("CUDA_VISIBLE_DEVICES")
        .ok()
        .and_then(|v| v.split(',').next().map(|d| d.trim().to_owned()))
        .filter(|d| !d.is_empty());
    let mut args = vec![
        "--query-gpu=name".to_owned(),
        "--format=csv,noheader".to_owned(),
    ];
    if let Some(d) = pinned {
        args.extend(["-i".to_owned(), d]);
    }
    let names: Vec<String> = Command::new("nvidia-smi")
        .args(&args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            let mut names: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect();
            names.sort();
            names.dedup();
            names
        })
        .unwrap_or_default();
    if names.is_empty() {
        "CUDA device 0".to_owned()
    } else {
        names.join(" or ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interpreter_that_cannot_run_names_what_to_install_and_choose() {
        let timer = LatencyTimer::new(
            LatencyRuntime::OnnxruntimeCpu,
            "/nonexistent/fair-pruner-test/python3",
        );
        let e = timer.check_available().unwrap_err().to_string();
        assert!(
            e.starts_with("latency-on: onnxruntime-cpu: cannot run the Python interpreter '/nonexistent/fair-pruner-test/python3'"),
            "{e}"
        );
        assert!(e.contains("pip install onnxruntime numpy"), "{e}");
        assert!(
            e.contains("`latency-python`") && e.contains("FAIR_PRUNER_PYTHON"),
            "{e}"
        );
        assert!(
            e.contains("or measure on libtorch CPU (`latency-on` libtorch-cpu)"),
            "{e}"
        );
        assert!(
            crate::cli_text(&timer.check_available().unwrap_err())
                .contains("or measure on libtorch CPU (--latency-on libtorch-cpu)")
        );
    }

    #[test]
    fn cuda_is_refused_with_what_to_choose() {
        let timer = LatencyTimer::new(LatencyRuntime::Cuda, "python3");
        if tch::Cuda::is_available() {
            eprintln!("skipped: this machine has a CUDA device, so CUDA is not refused here");
            return;
        }
        for e in [
            timer.check_available().unwrap_err().to_string(),
            timer
                .session(1, 1, &LatencyOptions::default())
                .err()
                .expect("no CUDA session without CUDA")
                .to_string(),
        ] {
            assert!(
                e.starts_with("latency-on: cuda: libtorch sees no CUDA device here"),
                "{e}"
            );
            assert!(
                e.contains("libtorch-cpu, onnxruntime-cpu or pytorch-cpu (`latency-on`)"),
                "{e}"
            );
        }
    }

    /// An executable shell script `body` standing for a Python interpreter, in `dir`.
    /// The script is copied into place by a `cp` process, never opened for writing by this
    /// one: a process another test forks meanwhile inherits this process's open files until
    /// it execs, and running a file open for writing fails with "Text file busy" (renaming
    /// would not help: it keeps the same file).
    fn fake_python(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("fake-python");
        let writing = dir.join("fake-python.txt");
        std::fs::write(&writing, format!("#!/bin/sh\n{body}\n")).unwrap();
        let copied = Command::new("cp")
            .arg(&writing)
            .arg(&path)
            .status()
            .unwrap();
        assert!(copied.success());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A fake helper that answers the handshake, then every load with `loaded` and every
    /// run of model 0 with 4 ms and of the others with 1 ms; it logs each request, and at
    /// each load the ONNX files in its working directory, into `dir/log`.
    fn fixed_answers(dir: &Path) -> PathBuf {
        let log = dir.join("log");
        fake_python(
            dir,
            &format!(
                r#"log='{}'
pwd >> "$log"
echo '{{"onnxruntime": "9.9.9"}}'
while read -r line; do
  echo "$line" >> "$log"
  case "$line" in
    *'"op":"load"'*) ls *.onnx | tr '\n' ' ' >> "$log"; echo >> "$log"
       n=$(echo "$line" | grep -o '\.onnx' | wc -l); echo "{{\"loaded\": $n}}" ;;
    *'"model":0,'*) echo '{{"ms": [4.0]}}' ;;
    *) echo '{{"ms": [1.0]}}' ;;
  esac
done"#,
                log.display()
            ),
        )
    }

    fn models() -> Vec<Model> {
        let graph = fair_zoo::mlp(vec![1, 4, 4], &[24, 12], 3).unwrap();
        let narrow = |w: usize| {
            let units: HashMap<String, usize> = [("layers.0".to_owned(), w)].into();
            Model::new(graph.with_units(&units).unwrap(), tch::Device::Cpu, 0).unwrap()
        };
        vec![
            Model::new(graph.clone(), tch::Device::Cpu, 0).unwrap(),
            narrow(8),
            narrow(16),
        ]
    }

    fn rounds(n: usize) -> LatencyOptions {
        LatencyOptions {
            batch_sizes: vec![1],
            warmup: 1,
            min_rounds: n,
            max_rounds: n,
            budget_seconds: 0.0,
            noisy_above: 0.25,
        }
    }

    fn names(_: usize, i: usize) -> String {
        format!("model #{i}")
    }

    #[test]
    fn models_are_timed_on_the_runtimes_device_wherever_they_live() {
        let cpu = models();
        let set: Vec<&Model> = cpu.iter().collect();
        let timed = LatencyTimer::libtorch_cpu()
            .time(&[set.clone(), set.clone()], &names, 1, 1, &rounds(3))
            .unwrap();
        assert_eq!(timed.len(), 2);
        assert!(timed.iter().flatten().all(|l| l.round_ms.len() == 3));
        if !tch::Cuda::is_available() {
            eprintln!("skipped the CUDA half: libtorch sees no CUDA device");
            return;
        }
        // Models on the CPU timed on CUDA, and models on CUDA timed on the CPU: copies are
        // timed, the models are left where they were.
        let cuda = LatencyTimer::new(LatencyRuntime::Cuda, "python3");
        assert!(
            !cuda
                .runtime_version()
                .unwrap()
                .unwrap_or_default()
                .is_empty()
        );
        let on_gpu = cuda
            .time(&[set.clone(), set.clone()], &names, 4, 1, &rounds(3))
            .unwrap();
        assert!(
            on_gpu
                .iter()
                .flatten()
                .all(|l| l.round_ms.len() == 3 && l.round_ms.iter().all(|&ms| ms > 0.0))
        );
        assert!(cpu.iter().all(|m| m.device() == Device::Cpu));
        let gpu: Vec<Model> = cpu
            .iter()
            .map(|m| copied_to(m, Device::Cuda(0), "a model").unwrap())
            .collect();
        let gpu_set: Vec<&Model> = gpu.iter().collect();
        let back = LatencyTimer::libtorch_cpu()
            .time(&[gpu_set], &names, 1, 1, &rounds(3))
            .unwrap();
        assert_eq!(back[0].len(), 3);
        assert!(gpu.iter().all(|m| m.device() == Device::Cuda(0)));
    }

    #[test]
    fn the_helper_times_set_by_set_on_the_schedule_fair_pruner_sends() {
        let dir = tempfile::tempdir().unwrap();
        let timer = LatencyTimer::new(LatencyRuntime::OnnxruntimeCpu, fixed_answers(dir.path()));
        let m = models();
        let timed = timer
            .time(
                &[vec![&m[0], &m[1]], vec![&m[0], &m[2]]],
                &names,
                2,
                1,
                &rounds(3),
            )
            .unwrap();
        assert_eq!(timed.len(), 2);
        for set in &timed {
            assert_eq!(set.len(), 2);
            assert_eq!(set[0].ms, crate::Spread::of(&[4.0]));
            assert_eq!(set[1].ms, crate::Spread::of(&[1.0]));
            assert_eq!(set[1].speedup.unwrap().median, 4.0);
            assert_eq!((set[0].rounds, set[0].batch), (3, 2));
            assert!(!set[0].noisy && !set[1].noisy);
        }
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        // Started in its own private directory, not the current one.
        assert!(lines[0].contains("fair-pruner-onnxruntime-"), "{log}");
        assert_ne!(
            Path::new(lines[0]),
            std::env::current_dir().unwrap().as_path()
        );
        // Set 1: the reference and one width, loaded by relative names; one warm-up pass
        // each, then rounds 0 1 | 1 0 | 0 1, one pass per request.
        let load1: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(load1["models"], serde_json::json!(["m0.onnx", "m1.onnx"]));
        assert_eq!(
            (load1["batch"].as_u64(), load1["threads"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(load1["input"], serde_json::json!([1, 4, 4]));
        assert_eq!(lines[2].trim(), "m0.onnx m1.onnx");
        let runs: Vec<u64> = lines[3..11]
            .iter()
            .map(|l| {
                let r: serde_json::Value = serde_json::from_str(l).unwrap();
                assert_eq!(
                    (r["op"].as_str(), r["passes"].as_u64()),
                    (Some("run"), Some(1))
                );
                r["model"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(runs, [0, 1, 0, 1, 1, 0, 0, 1]);
        // Set 2: the reference is not exported again, and set 1's width is deleted before
        // set 2's is written.
        let load2: serde_json::Value = serde_json::from_str(lines[11]).unwrap();
        assert_eq!(load2["models"], serde_json::json!(["m0.onnx", "m2.onnx"]));
        assert_eq!(lines[12].trim(), "m0.onnx m2.onnx");
        assert_eq!(lines.len(), 21, "{log}");
    }

    /// The error of timing models 0 and 1 with the fake interpreter `body`.
    fn failure(body: &str, timeouts: HelperTimeouts) -> String {
        let dir = tempfile::tempdir().unwrap();
        let timer = LatencyTimer::new(
            LatencyRuntime::OnnxruntimeCpu,
            fake_python(dir.path(), body),
        )
        .with_timeouts(timeouts);
        let m = models();
        timer
            .time(&[vec![&m[0], &m[1]]], &names, 1, 1, &rounds(3))
            .unwrap_err()
            .to_string()
    }

    const HELLO: &str = r#"echo '{"onnxruntime": "9.9.9"}'"#;

    #[test]
    fn an_interpreter_that_is_not_the_helper_fails_the_probe_clearly() {
        let dir = tempfile::tempdir().unwrap();
        for (body, says) in [
            (
                "exit 0",
                "exited (exit status: 0) while starting (importing onnxruntime), without answering",
            ),
            (
                "echo hello",
                r#"answered "hello" while starting (importing onnxruntime), which is not fair-pruner's helper protocol"#,
            ),
            (
                r#"echo '{"version": 1}'"#,
                "which is not fair-pruner's helper protocol",
            ),
        ] {
            let python = fake_python(dir.path(), body);
            let e = LatencyTimer::new(LatencyRuntime::OnnxruntimeCpu, &python)
                .check_available()
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("timing on onnxruntime-cpu failed: the timing helper run by '"),
                "{e}"
            );
            assert!(e.contains(says), "{body}: {e}");
        }
        let e = LatencyTimer::new(LatencyRuntime::OnnxruntimeCpu, "/bin/true")
            .check_available()
            .unwrap_err()
            .to_string();
        assert!(e.contains("'/bin/true' exited (exit status: 0)"), "{e}");
        // Exit status 3: the import error, with what to install.
        let python = fake_python(
            dir.path(),
            "echo 'cannot import onnxruntime and numpy: ModuleNotFoundError: x' >&2; exit 3",
        );
        let e = LatencyTimer::new(LatencyRuntime::OnnxruntimeCpu, &python)
            .check_available()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot import onnxruntime and numpy: ModuleNotFoundError: x; install them"),
            "{e}"
        );
        assert!(
            LatencyTimer::new(LatencyRuntime::OnnxruntimeCpu, fixed_answers(dir.path()))
                .check_available()
                .is_ok()
        );
    }

    #[test]
    fn answers_that_do_not_fit_the_request_are_errors() {
        let t = HelperTimeouts::default();
        // Garbage after the handshake.
        let e = failure(
            &format!("{HELLO}; read -r l; echo 'not json'; cat > /dev/null"),
            t,
        );
        assert!(
            e.contains(r#"answered "not json" while loading model #0 and model #1"#),
            "{e}"
        );
        // The wrong number of models loaded.
        let e = failure(
            &format!(r#"{HELLO}; read -r l; echo '{{"loaded": 3}}'; cat > /dev/null"#),
            t,
        );
        assert!(
            e.contains(r#"answered "{\"loaded\":3}" while loading model #0 and model #1"#),
            "{e}"
        );
        // Two times for one pass.
        let e = failure(
            &format!(
                r#"{HELLO}; read -r l; echo '{{"loaded": 2}}'; while read -r l; do echo '{{"ms": [1.0, 2.0]}}'; done"#
            ),
            t,
        );
        assert!(e.contains("while timing model #0"), "{e}");
        // A time that is not a positive number.
        let e = failure(
            &format!(
                r#"{HELLO}; read -r l; echo '{{"loaded": 2}}'; while read -r l; do echo '{{"ms": [-1]}}'; done"#
            ),
            t,
        );
        assert!(e.contains("while timing model #0"), "{e}");
    }

    #[test]
    fn a_helper_that_exits_names_its_status_and_output() {
        let e = failure(
            &format!("{HELLO}; read -r l; echo 'Segmentation fault' >&2; exit 7"),
            HelperTimeouts::default(),
        );
        assert!(
            e.contains(
                "exited (exit status: 7) while loading model #0 and model #1, without answering"
            ),
            "{e}"
        );
        assert!(
            e.contains("--- the last lines of its output ---\nSegmentation fault"),
            "{e}"
        );
    }

    #[test]
    fn a_helper_that_hangs_is_stopped_at_its_deadline() {
        let short = HelperTimeouts {
            start: Duration::from_secs(30),
            load_per_model: Duration::from_secs(30),
            pass: Duration::from_millis(300),
        };
        let start = Instant::now();
        let e = failure(
            &format!(r#"{HELLO}; read -r l; echo '{{"loaded": 2}}'; read -r l; exec sleep 60"#),
            short,
        );
        assert!(
            e.contains("gave no answer within 0.3 s while timing model #0; it was stopped"),
            "{e}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{:?}",
            start.elapsed()
        );
        // A hang at start.
        let e = failure(
            "exec sleep 60",
            HelperTimeouts {
                start: Duration::from_millis(300),
                ..short
            },
        );
        assert!(
            e.contains("gave no answer within 0.3 s while starting (importing onnxruntime)"),
            "{e}"
        );
    }

    #[test]
    fn a_slow_model_gets_20_times_its_first_run_per_pass() {
        let short = HelperTimeouts {
            start: Duration::from_secs(30),
            load_per_model: Duration::from_secs(30),
            pass: Duration::from_millis(100),
        };
        // Each pass takes 0.4 s; the first runs took 50 ms (1 s allowed per pass) or 10 ms
        // (0.2 s: the pass deadline stays 0.1 s, or becomes 0.2 s).
        let helper = |first: &str| {
            format!(
                r#"{HELLO}; read -r l; echo '{{"loaded": 2, "first_ms": {first}}}'; while read -r l; do sleep 0.4; echo '{{"ms": [400.0]}}'; done"#
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let timer = LatencyTimer::new(
            LatencyRuntime::OnnxruntimeCpu,
            fake_python(dir.path(), &helper("[50.0, 50.0]")),
        )
        .with_timeouts(short);
        let m = models();
        let timed = timer
            .time(&[vec![&m[0], &m[1]]], &names, 1, 1, &rounds(1))
            .unwrap();
        assert_eq!(timed[0][1].ms.median, 400.0);
        let e = failure(&helper("[50.0, 10.0]"), short);
        assert!(
            e.contains("gave no answer within 0.2 s while timing model #1; it was stopped"),
            "{e}"
        );
        assert_eq!(
            pass_deadline(Duration::from_secs(60), Some(5000.0)),
            Duration::from_secs(100)
        );
        assert_eq!(
            pass_deadline(Duration::from_secs(60), Some(f64::INFINITY)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn a_set_is_named_by_its_models() {
        let name = |i: usize| format!("m{i}");
        assert_eq!(set_names(1, &name), "m0");
        assert_eq!(set_names(2, &name), "m0 and m1");
        assert_eq!(set_names(3, &name), "m0, m1 and m2");
        assert_eq!(set_names(6, &name), "m0, m1, …, m5 (6 models)");
        // A load that does not answer in time names the set.
        let e = failure(
            &format!("{HELLO}; read -r l; exec sleep 60"),
            HelperTimeouts {
                start: Duration::from_secs(30),
                load_per_model: Duration::from_millis(150),
                pass: Duration::from_secs(30),
            },
        );
        assert!(
            e.contains(
                "gave no answer within 0.3 s while loading model #0 and model #1; it was stopped"
            ),
            "{e}"
        );
    }

    #[test]
    fn stopping_the_helper_stops_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pid = dir.path().join("pid");
        let timer = LatencyTimer::new(
            LatencyRuntime::OnnxruntimeCpu,
            fake_python(
                dir.path(),
                &format!(
                    r#"sleep 60 </dev/null >/dev/null 2>&1 & echo $! > '{}'
{HELLO}; read -r l; echo '{{"loaded": 2}}'; while read -r l; do echo '{{"ms": [1.0]}}'; done"#,
                    pid.display()
                ),
            ),
        );
        let m = models();
        timer
            .time(&[vec![&m[0], &m[1]]], &names, 1, 1, &rounds(1))
            .unwrap();
        let pid = std::fs::read_to_string(&pid).unwrap();
        let stat = PathBuf::from(format!("/proc/{}/stat", pid.trim()));
        // Killed with the helper: gone, or a zombie where nothing reaps it.
        let runs = || {
            std::fs::read_to_string(&stat).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| !r.trim_start().starts_with('Z'))
            })
        };
        let until = Instant::now() + Duration::from_secs(10);
        while runs() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!runs(), "the helper's child {} still runs", pid.trim());
    }

    #[test]
    fn timed_sessions_do_not_spin_between_passes() {
        // Set on the options every timed session is created with (documented in the
        // helper's header); the real ONNX Runtime tests create sessions with it.
        let options = ORT_HELPER
            .script
            .split("def options(")
            .nth(1)
            .and_then(|s| s.split("\n\n").next())
            .expect("the helper's session options");
        assert!(
            options.contains(r#"add_session_config_entry("session.intra_op.allow_spinning", "0")"#),
            "{options}"
        );
        assert!(ORT_HELPER.script.contains("InferenceSession(f, o,"));
    }

    #[test]
    fn a_model_onnx_runtime_cannot_load_is_named_with_what_to_choose() {
        let body = format!(
            r#"{HELLO}; read -r l; echo '{{"error": "InvalidGraph: op Foo is not supported", "model": 1}}'; cat > /dev/null"#
        );
        let dir = tempfile::tempdir().unwrap();
        let timer = LatencyTimer::new(
            LatencyRuntime::OnnxruntimeCpu,
            fake_python(dir.path(), &body),
        );
        let m = models();
        let e = timer
            .time(&[vec![&m[0], &m[1]]], &names, 1, 1, &rounds(3))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "timing on onnxruntime-cpu failed: ONNX Runtime cannot load or run model #1 \
             (InvalidGraph: op Foo is not supported); measure on libtorch CPU instead (`latency-on` libtorch-cpu)"
        );
        assert!(
            crate::cli_text(&e).ends_with("instead (--latency-on libtorch-cpu)"),
            "{}",
            crate::cli_text(&e)
        );
        // The early check loads the full model alone.
        let body = format!(
            r#"{HELLO}; read -r l; echo "$l" > '{}'; echo '{{"error": "InvalidGraph: no", "model": 0}}'; cat > /dev/null"#,
            dir.path().join("request").display()
        );
        let timer = LatencyTimer::new(
            LatencyRuntime::OnnxruntimeCpu,
            fake_python(dir.path(), &body),
        );
        let e = timer.check_model(&m[0], 2, 1).unwrap_err().to_string();
        assert!(
            e.contains("cannot load or run the full model (InvalidGraph: no)"),
            "{e}"
        );
        let request: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("request")).unwrap())
                .unwrap();
        assert_eq!(request["op"], "load");
        assert_eq!(request["models"], serde_json::json!(["m0.onnx"]));
        assert_eq!(request["batch"], 2);
        // libtorch: nothing to check.
        assert!(
            LatencyTimer::libtorch_cpu()
                .check_model(&m[0], 1, 1)
                .is_ok()
        );
    }

    #[test]
    fn an_interpreter_is_probed_once_per_process() {
        let dir = tempfile::tempdir().unwrap();
        let starts = dir.path().join("starts");
        let python = fake_python(
            dir.path(),
            &format!(
                r#"echo x >> '{}'; echo '{{"onnxruntime": "1.2.3"}}'; cat > /dev/null"#,
                starts.display()
            ),
        );
        let timer = LatencyTimer::new(LatencyRuntime::OnnxruntimeCpu, &python);
        timer.check_available().unwrap();
        timer.check_available().unwrap();
        assert_eq!(timer.runtime_version().unwrap().as_deref(), Some("1.2.3"));
        assert_eq!(std::fs::read_to_string(&starts).unwrap().lines().count(), 1);
        assert_eq!(
            LatencyTimer::libtorch_cpu().runtime_version().unwrap(),
            None
        );
    }

    #[test]
    fn the_pip_command_quotes_an_interpreter_path_the_shell_would_split() {
        assert_eq!(shell_quoted("/usr/bin/python3"), "/usr/bin/python3");
        assert_eq!(shell_quoted("/opt/my env/python"), "'/opt/my env/python'");
        assert_eq!(shell_quoted("/a/it's/python"), r"'/a/it'\''s/python'");
        let timer = LatencyTimer::new(LatencyRuntime::OnnxruntimeCpu, "/opt/my env/python");
        let e = timer
            .missing("cannot import onnxruntime and numpy: ModuleNotFoundError: x")
            .to_string();
        assert!(
            e.contains("(`'/opt/my env/python' -m pip install onnxruntime numpy`)"),
            "{e}"
        );
    }

    #[test]
    fn a_budget_that_is_not_a_finite_number_of_seconds_is_refused() {
        for budget in [f64::NAN, f64::INFINITY, -1.0] {
            let options = LatencyOptions {
                budget_seconds: budget,
                ..LatencyOptions::default()
            };
            let e = LatencyTimer::libtorch_cpu()
                .time(&[], &names, 1, 1, &options)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("budget_seconds must be a finite number of seconds ≥ 0"),
                "{budget}: {e}"
            );
            let e = measure(&[&models()[0]], &options).unwrap_err().to_string();
            assert!(e.contains("budget_seconds"), "{e}");
        }
    }
}
