//! Fine-tuning on PyTorch DDP: the export's own `finetune.py`, launched with torchrun
//! (`python -m torch.distributed.run`), its weights read back into the pruned model.
//!
//! For every goal, [`crate::Pruner`] exports the pruned model into its staged sub-directory
//! (`model.py`, `model.safetensors`, `model.toml`, `finetune.py`, `finetune.json`), runs
//!
//! ```text
//! python -m torch.distributed.run [--standalone] --nproc_per_node N [TORCHRUN_ARGS] finetune.py [SCRIPT_ARGS]
//! ```
//!
//! there (`--standalone` — a free local port — unless torchrun arguments are given, e.g. for
//! several nodes), streams its output into `finetune/torchrun.log`, reads
//! `finetune/result.json`, loads `finetune/finetuned.safetensors` into the pruned model and
//! re-exports it. A non-zero exit, a missing or inconsistent result, or unloadable weights
//! are a [`PipelineError::Torchrun`] with the last lines of the output.
//!
//! Data: the script reads what `finetune.json` records. In-memory splits
//! ([`TorchrunData::Datasets`], e.g. the built-in Fashion-MNIST split or a `--train-fraction`
//! subset) are written once per run into `<out>/finetune-data/{train,test}.safetensors` in
//! fair-data's dataset format, so the script trains and evaluates on exactly the images
//! fair-pruner uses; CIFAR, IDX and ImageFolder sources are read from the user's directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use fair_data::{Dataset, Transform};
use fair_ir::Graph;
use fair_runtime::Model;
use fair_surgery::{
    FinetuneSpec, ScriptAugment, ScriptData, ScriptTrain, ScriptTransform, Teacher,
};
use fair_train::TrainSettings;
use serde::Deserialize;

use crate::error::PipelineError;
use crate::report::{Accuracy, TorchrunRun};

/// The environment variable naming the Python interpreter (with torch) that runs torchrun.
pub const PYTHON_ENV: &str = "FAIR_PRUNER_PYTHON";

/// The output sub-directory holding the in-memory splits written for the script.
pub const DATA_DIR: &str = "finetune-data";

/// The output sub-directory holding the unpruned model exported as the distillation teacher.
pub const TEACHER_DIR: &str = "teacher";

/// Lines of output quoted in errors.
const TAIL_LINES: usize = 40;

/// Where `finetune.py` reads its images.
#[derive(Debug, Clone)]
pub enum TorchrunData<'a> {
    /// In-memory splits: written into `<out>/finetune-data/` (fair-data's dataset format).
    Datasets {
        /// The training split.
        train: &'a Dataset,
        /// The test split.
        test: &'a Dataset,
    },
    /// A CIFAR binary directory.
    Cifar {
        /// The extracted directory (`cifar-10-batches-bin` or `cifar-100-binary`).
        dir: PathBuf,
        /// CIFAR-100 (fine labels) instead of CIFAR-10.
        hundred: bool,
    },
    /// A directory of IDX files (`train-images-idx3-ubyte[.gz]`, `t10k-...`).
    Idx {
        /// The directory.
        dir: PathBuf,
    },
    /// ImageFolder trees, read with torchvision as fair-data's `ImageFolder` reads them (the
    /// recorded transform: resize + centre crop, RandomResizedCrop and flip only as its
    /// augmentation says).
    Folder {
        /// The training tree.
        train: PathBuf,
        /// The test (validation) tree.
        test: PathBuf,
    },
}

/// Distillation from the unpruned model: loss = (1 − weight)·CE + weight·T²·KL.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Distill {
    /// Softmax temperature T (> 0).
    pub temperature: f64,
    /// Weight of the distillation term, in [0, 1].
    pub weight: f64,
}

impl Default for Distill {
    fn default() -> Self {
        Distill {
            temperature: 4.0,
            weight: 0.5,
        }
    }
}

/// Fine-tuning on PyTorch DDP through torchrun (see the module documentation). Built with
/// [`Torchrun::new`] and passed to [`crate::Pruner::torchrun`].
#[derive(Debug, Clone)]
pub struct Torchrun<'a> {
    data: TorchrunData<'a>,
    transform: Transform,
    settings: TrainSettings,
    nproc: usize,
    python: PathBuf,
    torchrun_args: Vec<String>,
    script_args: Vec<String>,
    label_smoothing: f64,
    distill: Option<Distill>,
}

impl<'a> Torchrun<'a> {
    /// Fine-tuning on `data` with `transform` (normalisation and augmentation, recorded in
    /// `finetune.json`) and `settings` (epochs — 0 skips —, global batch size, learning rate,
    /// momentum, weight decay, schedule, seed). One process, the interpreter from
    /// `FAIR_PRUNER_PYTHON` (else `python3`), no label smoothing, no distillation.
    pub fn new(data: TorchrunData<'a>, transform: &Transform, settings: TrainSettings) -> Self {
        Torchrun {
            data,
            transform: transform.clone(),
            settings,
            nproc: 1,
            python: std::env::var_os(PYTHON_ENV)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("python3")),
            torchrun_args: Vec::new(),
            script_args: Vec::new(),
            label_smoothing: 0.0,
            distill: None,
        }
    }

    /// Processes per node (torchrun's `--nproc_per_node`; GPUs per node on CUDA).
    pub fn nproc(mut self, n: usize) -> Self {
        self.nproc = n;
        self
    }

    /// The Python interpreter with torch (and safetensors; torchvision for folders).
    pub fn python(mut self, python: impl Into<PathBuf>) -> Self {
        self.python = python.into();
        self
    }

    /// Extra torchrun arguments, e.g. `--nnodes 2 --node_rank 0 --master_addr HOST
    /// --master_port PORT`; when given, `--standalone` is not added.
    pub fn torchrun_args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.torchrun_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Extra `finetune.py` arguments, e.g. `--max-steps 20` or `--workers 8`.
    pub fn script_args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.script_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Label smoothing of the cross-entropy, in [0, 1) (default 0, as the tch path).
    pub fn label_smoothing(mut self, eps: f64) -> Self {
        self.label_smoothing = eps;
        self
    }

    /// Distils from the unpruned model, exported once into `<out>/teacher/`.
    pub fn distill(mut self, distill: Distill) -> Self {
        self.distill = Some(distill);
        self
    }

    /// The epochs to run (0: no fine-tuning).
    pub fn epochs(&self) -> usize {
        self.settings.epochs
    }

    /// Checks the settings before any work; torchrun needs an output directory to run in.
    pub(crate) fn check(&self, has_out: bool) -> Result<(), PipelineError> {
        if self.settings.epochs == 0 {
            return Ok(());
        }
        self.settings.check()?;
        if !has_out {
            return Err(PipelineError::invalid(
                "finetune-with",
                "torchrun runs finetune.py inside the export: give an output directory (`out`)",
            ));
        }
        if self.nproc == 0 {
            return Err(PipelineError::invalid("nproc", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(PipelineError::invalid(
                "label-smoothing",
                format!("must be in [0, 1), found {}", self.label_smoothing),
            ));
        }
        if let Some(d) = self.distill {
            if !(d.temperature > 0.0 && d.temperature.is_finite()) {
                return Err(PipelineError::invalid(
                    "distill-temperature",
                    format!("must be positive, found {}", d.temperature),
                ));
            }
            if !(0.0..=1.0).contains(&d.weight) {
                return Err(PipelineError::invalid(
                    "distill-weight",
                    format!("must be in [0, 1], found {}", d.weight),
                ));
            }
        }
        let dirs: Vec<&Path> = match &self.data {
            TorchrunData::Datasets { train, .. } if train.is_empty() => {
                return Err(PipelineError::invalid(
                    "finetune-with",
                    format!("the training split '{}' is empty", train.name),
                ));
            }
            TorchrunData::Datasets { .. } => Vec::new(),
            TorchrunData::Cifar { dir, .. } | TorchrunData::Idx { dir } => vec![dir],
            TorchrunData::Folder { train, test } => vec![train, test],
        };
        if let Some(d) = dirs.iter().find(|d| !d.is_dir()) {
            return Err(PipelineError::invalid(
                "data-path",
                format!("'{}' is not a directory", d.display()),
            ));
        }
        Ok(())
    }

    /// Checks the interpreter imports torch and safetensors (before any expensive work) and
    /// returns torch's version.
    pub(crate) fn probe(&self) -> Result<String, PipelineError> {
        let out = Command::new(&self.python)
            .args([
                "-c",
                "import torch, torch.distributed.run, safetensors; print(torch.__version__)",
            ])
            .output()
            .map_err(|e| PipelineError::Torchrun {
                detail: format!(
                    "cannot run the Python interpreter '{}' ({e}): give one with torch 2.x and safetensors \
                     (`python` PATH or {PYTHON_ENV})",
                    self.python.display()
                ),
                tail: String::new(),
            })?;
        if !out.status.success() {
            return Err(PipelineError::Torchrun {
                detail: format!(
                    "'{}' cannot import torch and safetensors: give an interpreter that can (`python` PATH or {PYTHON_ENV})",
                    self.python.display()
                ),
                tail: tail(&String::from_utf8_lossy(&out.stderr)),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The settings `finetune.json` records, with the data and teacher at their places in
    /// the output directory.
    pub(crate) fn spec(&self, graph: &Graph) -> Result<FinetuneSpec, PipelineError> {
        let mut spec = spec_for(graph, Some(&self.transform), Some(&self.settings));
        spec.train.label_smoothing = self.label_smoothing;
        let abs = |p: &Path| -> Result<String, PipelineError> {
            let p = std::fs::canonicalize(p).map_err(|source| fair_fs::FsError::Io {
                action: "cannot resolve",
                path: p.to_owned(),
                source,
            })?;
            Ok(p.display().to_string())
        };
        spec.data = Some(match &self.data {
            TorchrunData::Datasets { .. } => ScriptData::Fair {
                train: format!("../{DATA_DIR}/train.safetensors"),
                test: format!("../{DATA_DIR}/test.safetensors"),
            },
            TorchrunData::Cifar { dir, hundred } => {
                let path = abs(dir)?;
                if *hundred {
                    ScriptData::Cifar100 { path }
                } else {
                    ScriptData::Cifar10 { path }
                }
            }
            TorchrunData::Idx { dir } => ScriptData::Idx { path: abs(dir)? },
            TorchrunData::Folder { train, test } => ScriptData::Folder {
                train: abs(train)?,
                test: abs(test)?,
            },
        });
        spec.teacher = self.distill.map(|d| Teacher {
            path: format!("../{TEACHER_DIR}"),
            temperature: d.temperature,
            weight: d.weight,
        });
        Ok(spec)
    }

    /// The command line, run in the export directory.
    fn command(&self) -> Vec<String> {
        let mut c = vec![
            self.python.display().to_string(),
            "-m".into(),
            "torch.distributed.run".into(),
        ];
        if self.torchrun_args.is_empty() {
            c.push("--standalone".into());
        }
        c.extend(["--nproc_per_node".into(), self.nproc.to_string()]);
        c.extend(self.torchrun_args.iter().cloned());
        c.push("finetune.py".into());
        c.extend(self.script_args.iter().cloned());
        c
    }

    /// Exports `pruned` into `root/label`, fine-tunes it there with torchrun, loads the
    /// result into `pruned` and returns torchrun's figures.
    pub(crate) fn run(
        &self,
        pruned: &mut Model,
        unpruned: &Model,
        root: &Path,
        label: &str,
        torch_version: &str,
        progress: bool,
    ) -> Result<TorchrunRun, PipelineError> {
        if let TorchrunData::Datasets { train, test } = &self.data {
            let dir = root.join(DATA_DIR);
            if !dir.join("test.safetensors").exists() {
                create_dir(&dir)?;
                train.save(&dir.join("train.safetensors"))?;
                test.save(&dir.join("test.safetensors"))?;
            }
        }
        if self.distill.is_some() && !root.join(TEACHER_DIR).join("model.py").exists() {
            fair_surgery::export(unpruned, &root.join(TEACHER_DIR))?;
        }
        let sub = root.join(label);
        let spec = self.spec(pruned.graph())?;
        fair_surgery::export_with(pruned, &sub, &spec)?;
        let out = sub.join("finetune");
        create_dir(&out)?;
        let log_path = out.join("torchrun.log");
        let command = self.command();
        if progress {
            eprintln!(
                "fine-tuning {label} with torchrun ({} process(es), log {})",
                self.nproc,
                Path::new(label).join("finetune/torchrun.log").display()
            );
        }
        let start = Instant::now();
        let status = run_logged(&command, &sub, &log_path, progress)?;
        let seconds = start.elapsed().as_secs_f64();
        let fail = |detail: String| PipelineError::Torchrun {
            detail,
            tail: tail(&log_end(&log_path)),
        };
        if !status.success() {
            return Err(fail(format!(
                "`{}` exited with {status}",
                command.join(" ")
            )));
        }
        let result_path = out.join("result.json");
        let text = fair_fs::read_string_bounded(&result_path, 16 << 20, "torchrun's result.json")
            .map_err(|e| {
            fail(format!(
                "it exited with success but wrote no readable {} ({e})",
                result_path.display()
            ))
        })?;
        let result: ScriptResult = serde_json::from_str(&text)
            .map_err(|e| fail(format!("{} is malformed: {e}", result_path.display())))?;
        if result.epochs != self.settings.epochs {
            return Err(fail(format!(
                "{} reports {} epoch(s), {} were asked for",
                result_path.display(),
                result.epochs,
                self.settings.epochs
            )));
        }
        if !(result.test.top1.is_finite() && result.test.loss.is_finite()) {
            return Err(fail(format!(
                "{} reports a test top-1 of {} and loss of {}",
                result_path.display(),
                result.test.top1,
                result.test.loss
            )));
        }
        pruned
            .load_weights(&out.join("finetuned.safetensors"))
            .map_err(|e| fail(format!("its fine-tuned weights do not load: {e}")))?;
        Ok(TorchrunRun {
            nproc: self.nproc,
            world_size: result.world_size,
            backend: result.backend,
            device: result.device,
            amp: result.amp,
            torch: torch_version.to_owned(),
            epochs: result.epochs,
            steps: result.steps,
            train_loss: result.train_loss,
            test: Accuracy {
                top1: result.test.top1,
                loss: result.test.loss,
            },
            test_samples: result.test.samples,
            seconds,
            command,
        })
    }
}

/// What `finetune/result.json` holds (the fields read back).
#[derive(Debug, Deserialize)]
struct ScriptResult {
    epochs: usize,
    steps: u64,
    world_size: usize,
    backend: Option<String>,
    device: String,
    amp: bool,
    train_loss: Vec<f64>,
    test: ScriptTest,
}

#[derive(Debug, Deserialize)]
struct ScriptTest {
    top1: f64,
    loss: f64,
    samples: usize,
}

/// The `finetune.json` of an export: the transform and training settings when known, no
/// data source (the torchrun path fills it in).
pub(crate) fn spec_for(
    graph: &Graph,
    transform: Option<&Transform>,
    settings: Option<&TrainSettings>,
) -> FinetuneSpec {
    let mut spec = FinetuneSpec::for_graph(graph);
    if let Some(t) = transform {
        let (mean, std) = t.normalization();
        spec.transform = ScriptTransform {
            mean,
            std,
            augment: t.augment.map(|a| ScriptAugment {
                crop_padding: a.crop_padding,
                flip: a.flip,
            }),
            resize: t.resize,
        };
    }
    if let Some(s) = settings {
        spec.train = ScriptTrain {
            epochs: s.epochs,
            batch_size: s.batch_size,
            lr: s.lr,
            momentum: s.momentum,
            weight_decay: s.weight_decay,
            seed: s.seed,
            schedule: serde_json::to_value(s.schedule).expect("schedules serialise"),
            optimizer: match s.optimizer {
                fair_train::Optimizer::Sgd => "sgd",
                fair_train::Optimizer::Adamw => "adamw",
            }
            .into(),
            ..ScriptTrain::default()
        };
    }
    spec
}

fn create_dir(dir: &Path) -> Result<(), PipelineError> {
    std::fs::create_dir_all(dir).map_err(|source| fair_fs::FsError::Io {
        action: "cannot create",
        path: dir.to_owned(),
        source,
    })?;
    Ok(())
}

/// Runs `command` in `dir`, copying its stdout and stderr line by line into `log` (and onto
/// stderr when `echo`).
fn run_logged(
    command: &[String],
    dir: &Path,
    log: &Path,
    echo: bool,
) -> Result<std::process::ExitStatus, PipelineError> {
    let file = std::fs::File::create(log).map_err(|source| fair_fs::FsError::Io {
        action: "cannot create",
        path: log.to_owned(),
        source,
    })?;
    let file = Arc::new(Mutex::new(file));
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .current_dir(dir)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| PipelineError::Torchrun {
            detail: format!("cannot start `{}`: {e}", command.join(" ")),
            tail: String::new(),
        })?;
    let copy = |stream: Box<dyn Read + Send>| {
        let file = Arc::clone(&file);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("{line}");
                }
                if let Ok(mut f) = file.lock() {
                    let _ = writeln!(f, "{line}");
                }
            }
        })
    };
    let threads = [
        copy(Box::new(child.stdout.take().expect("piped"))),
        copy(Box::new(child.stderr.take().expect("piped"))),
    ];
    let status = child.wait().map_err(|e| PipelineError::Torchrun {
        detail: format!("waiting for `{}`: {e}", command.join(" ")),
        tail: String::new(),
    })?;
    for t in threads {
        let _ = t.join();
    }
    Ok(status)
}

/// The last 64 KiB of the log at `path` (lossy UTF-8; empty when it cannot be read): enough
/// for [`tail`], however long the run's output grew.
fn log_end(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    const END: u64 = 64 << 10;
    let Ok((mut file, size)) = fair_fs::open_regular(path, "torchrun's log") else {
        return String::new();
    };
    let mut bytes = Vec::new();
    let _ = file
        .seek(SeekFrom::Start(size.saturating_sub(END)))
        .and_then(|_| file.take(END).read_to_end(&mut bytes));
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last [`TAIL_LINES`] lines of `text`.
pub(crate) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exported `finetune.json` carries the run's optimizer, and writes nothing for SGD.
    #[test]
    fn the_script_settings_carry_the_optimizer() {
        let graph = fair_zoo::build("mlp", &[1, 4, 4], 3).unwrap();
        let sgd = TrainSettings::default();
        let spec = spec_for(&graph, None, Some(&sgd));
        assert_eq!(spec.train.optimizer, "sgd");
        assert!(!serde_json::to_string(&spec).unwrap().contains("optimizer"));
        let adamw = TrainSettings {
            optimizer: fair_train::Optimizer::Adamw,
            weight_decay: 0.05,
            ..TrainSettings::default()
        };
        let spec = spec_for(&graph, None, Some(&adamw));
        assert_eq!(spec.train.optimizer, "adamw");
        assert_eq!(spec.train.weight_decay, 0.05);
        assert!(
            serde_json::to_string(&spec)
                .unwrap()
                .contains("\"optimizer\":\"adamw\"")
        );
    }
}
