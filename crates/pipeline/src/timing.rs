//! Where models are timed for latency targets: [`LatencyTimer`] is the one place that decides
//! between the runtimes. libtorch CPU runs in this process ([`crate::measure`]); ONNX Runtime
//! CPU runs in one helper process per call — a small embedded Python script
//! (`ort_timing.py`) run by an interpreter that has the `onnxruntime` package, on the models
//! exported as ONNX files into a private temporary directory. Both time with the same
//! schedule (warm-up, then rounds in a rotating order) and their round-by-round times are
//! summarised and flagged noisy by the same code, so latency tables, their cache, the
//! measured correction and the report treat every runtime alike.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use fair_runtime::Model;

use crate::error::PipelineError;
use crate::latency::{Latency, LatencyOptions, measure, summarize};
use crate::latency_table::LatencyRuntime;
use crate::torchrun::PYTHON_ENV;

/// The ONNX Runtime timing helper, run as `python FILE JOB` (see its header).
const ORT_SCRIPT: &str = include_str!("ort_timing.py");

/// The exit status of the helper when `onnxruntime` or `numpy` cannot be imported.
const MISSING_EXIT: i32 = 3;

/// The Python interpreter ONNX Runtime is reached through when none is given:
/// `FAIR_PRUNER_PYTHON`, else `python3` (found on `PATH`).
pub fn default_python() -> PathBuf {
    std::env::var_os(PYTHON_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// A runtime that times models interleaved, with what it needs to run: the Python
/// interpreter with `onnxruntime` for [`LatencyRuntime::OnnxruntimeCpu`] (unused by the
/// others).
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
}

impl LatencyTimer {
    /// Times on `runtime`; ONNX Runtime through the interpreter `python`.
    pub fn new(runtime: LatencyRuntime, python: impl Into<PathBuf>) -> Self {
        LatencyTimer {
            runtime,
            python: python.into(),
        }
    }

    /// Times on libtorch CPU, in this process.
    pub fn libtorch_cpu() -> Self {
        LatencyTimer::new(LatencyRuntime::LibtorchCpu, default_python())
    }

    /// The runtime timed on.
    pub fn runtime(&self) -> LatencyRuntime {
        self.runtime
    }

    /// The Python interpreter ONNX Runtime is reached through.
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// Whether models can be timed on this runtime here: an error naming what is missing
    /// and what to install or choose instead. ONNX Runtime is checked by running the
    /// interpreter and importing `onnxruntime` and `numpy`.
    pub fn check_available(&self) -> Result<(), PipelineError> {
        match self.runtime {
            LatencyRuntime::LibtorchCpu => Ok(()),
            LatencyRuntime::OnnxruntimeCpu => {
                let out = Command::new(&self.python)
                    .arg("-c")
                    .arg(ORT_SCRIPT)
                    .output()
                    .map_err(|e| self.cannot_run(&e))?;
                if out.status.success() {
                    Ok(())
                } else if out.status.code() == Some(MISSING_EXIT) {
                    Err(self.missing(&String::from_utf8_lossy(&out.stderr)))
                } else {
                    Err(PipelineError::Timing {
                        runtime: self.runtime.name().to_owned(),
                        detail: format!(
                            "'{}' failed while importing onnxruntime ({})",
                            self.python.display(),
                            out.status
                        ),
                        tail: crate::torchrun::tail(&String::from_utf8_lossy(&out.stderr)),
                    })
                }
            }
            LatencyRuntime::Cuda => Err(cuda_unavailable()),
        }
    }

    /// The error for an interpreter that cannot be run at all.
    fn cannot_run(&self, e: &std::io::Error) -> PipelineError {
        PipelineError::invalid(
            "latency-on",
            format!(
                "onnxruntime-cpu: cannot run the Python interpreter '{}' ({e}); ONNX Runtime is reached \
                 through a Python 3 with the `onnxruntime` and `numpy` packages \
                 (`python3 -m pip install onnxruntime numpy`): give its path with `latency-python` or \
                 {PYTHON_ENV}, or measure on `libtorch-cpu`",
                self.python.display()
            ),
        )
    }

    /// The error for an interpreter that lacks `onnxruntime` or `numpy` (`stderr`: its
    /// import error).
    fn missing(&self, stderr: &str) -> PipelineError {
        let python = self.python.display();
        let why = stderr.trim().lines().last().unwrap_or("").trim();
        PipelineError::invalid(
            "latency-on",
            format!(
                "onnxruntime-cpu: the Python interpreter '{python}' {why}; install them for it \
                 (`{python} -m pip install onnxruntime numpy`), give an interpreter that has them \
                 with `latency-python` or {PYTHON_ENV}, or measure on `libtorch-cpu`"
            ),
        )
    }

    /// Times the models of each set interleaved (the first of a set is its reference for
    /// speed-ups), at `batch` with `threads` intra-op threads: per set, one [`Latency`] per
    /// model. `options` gives the warm-up, rounds, budget and noise threshold (its batch
    /// sizes are ignored). libtorch runs in this process (its thread count restored after);
    /// ONNX Runtime runs every set in one helper process, on the models exported as ONNX (a
    /// reference shared by several sets is exported once).
    pub fn time(
        &self,
        sets: &[Vec<&Model>],
        batch: usize,
        threads: usize,
        options: &LatencyOptions,
    ) -> Result<Vec<Vec<Latency>>, PipelineError> {
        let mut session = self.session(batch, threads, options)?;
        for set in sets {
            session.add(set)?;
        }
        session.finish()
    }

    /// A timing session at `batch` with `threads` threads: sets are added one by one
    /// ([`Session::add`]; their models may be dropped right after) and timed by
    /// [`Session::finish`]. Checks the batch, threads and rounds.
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
        if options.min_rounds == 0 || options.max_rounds < options.min_rounds {
            return Err(PipelineError::invalid(
                "latency",
                "rounds must satisfy 1 ≤ min_rounds ≤ max_rounds",
            ));
        }
        let options = LatencyOptions {
            batch_sizes: vec![batch],
            ..options.clone()
        };
        Ok(match self.runtime {
            LatencyRuntime::LibtorchCpu => Session::Libtorch {
                threads: ThreadsSet::to(threads),
                options,
                timed: Vec::new(),
            },
            LatencyRuntime::OnnxruntimeCpu => {
                let dir = tempfile::Builder::new()
                    .prefix("fair-pruner-onnxruntime-")
                    .tempdir()
                    .map_err(|e| {
                        self.failed(format!("cannot create a temporary directory: {e}"), "")
                    })?;
                Session::Onnxruntime(OrtJob {
                    timer: self.clone(),
                    dir,
                    batch,
                    threads,
                    options,
                    exported: 0,
                    references: HashMap::new(),
                    sets: Vec::new(),
                })
            }
            LatencyRuntime::Cuda => return Err(cuda_unavailable()),
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

/// Sets of models being timed ([`LatencyTimer::session`]).
pub(crate) enum Session {
    /// libtorch: each set is timed when added.
    Libtorch {
        /// The thread count while the session lasts.
        threads: ThreadsSet,
        /// The rounds, at the session's batch.
        options: LatencyOptions,
        /// The figures of the sets added so far.
        timed: Vec<Vec<Latency>>,
    },
    /// ONNX Runtime: each set is exported when added and all are timed by one helper run.
    Onnxruntime(OrtJob),
}

impl Session {
    /// Adds a set (its first model is the reference for speed-ups). The models are not
    /// needed after this returns, except a reference shared with later sets, which must
    /// live as long as the session (it is exported once).
    pub(crate) fn add(&mut self, set: &[&Model]) -> Result<(), PipelineError> {
        match self {
            Session::Libtorch { options, timed, .. } => {
                timed.push(
                    measure(set, options)?
                        .into_iter()
                        .map(|mut per_batch| per_batch.remove(0))
                        .collect(),
                );
                Ok(())
            }
            Session::Onnxruntime(job) => job.add(set),
        }
    }

    /// The figures of every set added, in order: one [`Latency`] per model.
    pub(crate) fn finish(self) -> Result<Vec<Vec<Latency>>, PipelineError> {
        match self {
            Session::Libtorch { timed, threads, .. } => {
                drop(threads);
                Ok(timed)
            }
            Session::Onnxruntime(job) => job.run(),
        }
    }
}

/// The files of an ONNX Runtime timing: models exported into a private temporary directory
/// (removed when dropped), then timed by one run of the helper.
pub(crate) struct OrtJob {
    timer: LatencyTimer,
    dir: tempfile::TempDir,
    batch: usize,
    threads: usize,
    options: LatencyOptions,
    /// Models exported so far.
    exported: usize,
    /// The files of the references exported so far, by model identity.
    references: HashMap<*const Model, String>,
    /// Per set: the per-sample input shape and the model files.
    sets: Vec<(Vec<usize>, Vec<String>)>,
}

impl OrtJob {
    /// Writes `bytes` to `path`.
    fn write(&self, path: &Path, bytes: &[u8]) -> Result<(), PipelineError> {
        std::fs::write(path, bytes).map_err(|e| {
            self.timer
                .failed(format!("cannot write '{}': {e}", path.display()), "")
        })
    }

    /// Exports `model` as the next ONNX file; its path.
    fn export(&mut self, model: &Model) -> Result<String, PipelineError> {
        let path = self.dir.path().join(format!("m{}.onnx", self.exported));
        let bytes = fair_surgery::onnx_bytes(model, &fair_onnx::ExportOptions::default())?;
        self.write(&path, &bytes)?;
        self.exported += 1;
        Ok(path.display().to_string())
    }

    /// Exports a set's models (its reference once for all sets).
    fn add(&mut self, set: &[&Model]) -> Result<(), PipelineError> {
        let mut files = Vec::new();
        for (i, &m) in set.iter().enumerate() {
            let key = m as *const Model;
            let file = match self.references.get(&key) {
                Some(f) if i == 0 => f.clone(),
                _ => {
                    let f = self.export(m)?;
                    if i == 0 {
                        self.references.insert(key, f.clone());
                    }
                    f
                }
            };
            files.push(file);
        }
        let input = set
            .first()
            .map_or(Vec::new(), |m| m.graph().shape_at(0).to_vec());
        self.sets.push((input, files));
        Ok(())
    }

    /// Runs the helper on every set: per set, one [`Latency`] per model.
    fn run(self) -> Result<Vec<Vec<Latency>>, PipelineError> {
        let timer = &self.timer;
        let sets: Vec<serde_json::Value> = self
            .sets
            .iter()
            .map(|(input, models)| serde_json::json!({ "input": input, "models": models }))
            .collect();
        let o = &self.options;
        let job = serde_json::json!({
            "threads": self.threads,
            "batch": self.batch,
            "warmup": o.warmup,
            "min_rounds": o.min_rounds,
            "max_rounds": o.max_rounds,
            "budget_seconds": o.budget_seconds,
            "sets": sets,
        });
        let script = self.dir.path().join("ort_timing.py");
        let job_file = self.dir.path().join("job.json");
        self.write(&script, ORT_SCRIPT.as_bytes())?;
        self.write(&job_file, job.to_string().as_bytes())?;
        let out = Command::new(&timer.python)
            .arg(&script)
            .arg(&job_file)
            .output()
            .map_err(|e| timer.cannot_run(&e))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(MISSING_EXIT) {
            return Err(timer.missing(&stderr));
        }
        if !out.status.success() {
            return Err(timer.failed(
                format!(
                    "the timing helper run by '{}' exited with {}",
                    timer.python.display(),
                    out.status
                ),
                &stderr,
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.trim().lines().last().unwrap_or("");
        #[derive(serde::Deserialize)]
        struct Timed {
            sets: Vec<Vec<Vec<f64>>>,
        }
        let timed: Timed = serde_json::from_str(last).map_err(|e| {
            timer.failed(
                format!("the timing helper printed no usable result ({e})"),
                &stdout,
            )
        })?;
        let fits = timed.sets.len() == self.sets.len()
            && timed.sets.iter().zip(&self.sets).all(|(t, (_, models))| {
                t.len() == models.len()
                    && t.iter().all(|m| {
                        !m.is_empty()
                            && m.len() == t[0].len()
                            && m.iter().all(|x| x.is_finite() && *x > 0.0)
                    })
            });
        if !fits {
            return Err(timer.failed(
                "the timing helper's result does not match the models it was given".into(),
                "",
            ));
        }
        Ok(timed
            .sets
            .iter()
            .map(|times| summarize(self.batch, times, o.noisy_above))
            .collect())
    }
}

/// The error for timing on CUDA, which fair-pruner does not do yet.
fn cuda_unavailable() -> PipelineError {
    PipelineError::invalid(
        "latency-on",
        format!(
            "cuda: measuring latency tables on CUDA is not available yet in fair-pruner{}; \
             measure on `libtorch-cpu` or `onnxruntime-cpu`, or give a table measured there with `latency-table`",
            if tch::Cuda::is_available() {
                ""
            } else {
                " (and no CUDA device is present)"
            }
        ),
    )
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
        assert!(e.contains("`libtorch-cpu`"), "{e}");
    }

    #[test]
    fn cuda_is_refused_with_what_to_choose() {
        let e = LatencyTimer::new(LatencyRuntime::Cuda, "python3")
            .check_available()
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "latency-on: cuda: measuring latency tables on CUDA is not available yet"
            ),
            "{e}"
        );
        assert!(e.contains("`onnxruntime-cpu`"), "{e}");
    }
}
