//! Errors of the pipeline.

use std::path::PathBuf;

/// Everything a pipeline run can report. Settings are named by their name in
/// [`crate::RawSettings`] with `-` for `_` (`finetune-lr`): the `[prune]` config key with
/// `_`, the builder method with `_`; the CLI prints them as its flags (`--finetune-lr`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A setting is out of range or settings contradict each other.
    #[error("{setting}: {detail}")]
    Invalid {
        /// The setting's name, with `-` for `_` (e.g. `finetune-lr`, `data-path` for
        /// `[data] path`).
        setting: String,
        /// What is wrong and what is expected.
        detail: String,
    },
    /// A run configuration file is unusable.
    #[error("config{}: {detail}", .path.as_ref().map(|p| format!(" '{}'", p.display())).unwrap_or_default())]
    Config {
        /// The file.
        path: Option<PathBuf>,
        /// What is wrong.
        detail: String,
    },
    /// Drawing a chart failed.
    #[error("drawing the chart {chart}: {detail}")]
    Chart {
        /// The chart file.
        chart: String,
        /// What failed.
        detail: String,
    },
    /// The model zoo refused.
    #[error(transparent)]
    Zoo(#[from] fair_zoo::ZooError),
    /// An ONNX model could not be read or written.
    #[error("ONNX model '{}': {source}", .path.display())]
    Onnx {
        /// The ONNX file.
        path: PathBuf,
        /// What the ONNX reader or writer said.
        source: Box<fair_onnx::OnnxError>,
    },
    /// The IR refused, or a file could not be written.
    #[error(transparent)]
    Ir(#[from] fair_ir::IrError),
    /// A file could not be read or written, or an output path was refused.
    #[error(transparent)]
    Fs(#[from] fair_fs::FsError),
    /// Data could not be loaded.
    #[error(transparent)]
    Data(#[from] fair_data::DataError),
    /// The runtime (libtorch) failed.
    #[error(transparent)]
    Runtime(#[from] fair_runtime::RuntimeError),
    /// Scoring failed.
    #[error(transparent)]
    Scoring(#[from] fair_scoring::ScoringError),
    /// Analysis, selection or a score/plan file failed.
    #[error(transparent)]
    Analysis(#[from] fair_analysis::AnalysisError),
    /// Surgery failed.
    #[error(transparent)]
    Surgery(#[from] fair_surgery::SurgeryError),
    /// Training or evaluation failed.
    #[error(transparent)]
    Train(#[from] fair_train::TrainError),
    /// Fine-tuning on PyTorch DDP (torchrun) failed or reported something unusable.
    #[error("fine-tuning with torchrun failed: {detail}{}", if .tail.is_empty() { String::new() } else { format!("\n--- the last lines of its output ---\n{}", .tail) })]
    Torchrun {
        /// What went wrong (exit status, missing or inconsistent result, ...).
        detail: String,
        /// The last lines of the script's stdout and stderr (empty if it never ran).
        tail: String,
    },
    /// Timing models on a latency runtime failed (e.g. the helper process of ONNX Runtime
    /// or eager PyTorch).
    #[error("timing on {runtime} failed: {detail}{}", if .tail.is_empty() { String::new() } else { format!("\n--- the last lines of its output ---\n{}", .tail) })]
    Timing {
        /// The runtime (`onnxruntime-cpu`, `pytorch-cpu`).
        runtime: String,
        /// What went wrong.
        detail: String,
        /// The last lines of the helper's output (empty if there is none).
        tail: String,
    },
}

impl PipelineError {
    /// An [`PipelineError::Invalid`] for `setting`.
    pub fn invalid(setting: &str, detail: impl Into<String>) -> Self {
        PipelineError::Invalid {
            setting: setting.to_owned(),
            detail: detail.into(),
        }
    }
}

/// `text` with every setting written in backticks (`` `distill-weight` ``) as the
/// `fair-pruner` command's flag for it (`--distill-weight`); backticks around anything else
/// (not lowercase letters, digits and `-`) stay as they are.
///
/// ```
/// assert_eq!(fair_pipeline::flags_in("needs `distill-weight`"), "needs --distill-weight");
/// assert_eq!(fair_pipeline::flags_in("a `b c`"), "a `b c`");
/// ```
pub fn flags_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('`') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after.find('`') {
            Some(j)
                if j > 0
                    && after[..j]
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') =>
            {
                out.push_str("--");
                out.push_str(&after[..j]);
                rest = &after[j + 1..];
            }
            _ => {
                out.push('`');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The text the `fair-pruner` command prints for the library error `e` (with no context
/// around it) when that error names settings, which the command spells as its flags; `None`
/// for an error printed as its [`error_text`]. A [`PipelineError::Invalid`] becomes
/// `--setting: detail` (the goal's detail alone, since the goal is several flags;
/// `[train]: detail` for the training section), with the settings its detail names in
/// backticks as flags ([`flags_in`]); so do a refused output path's text (whose inputs are
/// named by setting, `` `weights` ``), a scoring setting's error (`--max-memory: ...`), a
/// training setting's, torchrun's, and coupled layers that disagree (`` `rule` ``). The
/// pipeline's transparent wrappers are looked through.
///
/// ```
/// use fair_pipeline::{PipelineError, flag_text};
/// let e = PipelineError::invalid("distill-temperature", "needs `distill-weight`");
/// assert_eq!(flag_text(&e).unwrap(), "--distill-temperature: needs --distill-weight");
/// ```
pub fn flag_text(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    use fair_analysis::AnalysisError::Disagreement;
    if let Some(p) = e.downcast_ref::<PipelineError>() {
        return match p {
            PipelineError::Invalid { setting, detail } => {
                let detail = flags_in(detail);
                Some(match setting.as_str() {
                    "goal" => detail,
                    "train" => format!("[train]: {detail}"),
                    // A config key (`[prune] latency_table`), not a flag.
                    s if s.starts_with('[') => format!("{s}: {detail}"),
                    s => format!("--{s}: {detail}"),
                })
            }
            PipelineError::Torchrun { detail, tail } => Some(
                PipelineError::Torchrun {
                    detail: flags_in(detail),
                    tail: tail.clone(),
                }
                .to_string(),
            ),
            PipelineError::Timing {
                runtime,
                detail,
                tail,
            } => Some(
                PipelineError::Timing {
                    runtime: runtime.clone(),
                    detail: flags_in(detail),
                    tail: tail.clone(),
                }
                .to_string(),
            ),
            PipelineError::Scoring(e) => flag_text(e),
            PipelineError::Analysis(e) => flag_text(e),
            PipelineError::Surgery(e) => flag_text(e),
            PipelineError::Fs(e) => flag_text(e),
            PipelineError::Train(e) => flag_text(e),
            _ => None,
        };
    }
    if let Some(fair_scoring::ScoringError::Setting { name, detail }) =
        e.downcast_ref::<fair_scoring::ScoringError>()
    {
        return Some(format!("--{name}: {}", flags_in(detail)));
    }
    let names_settings = matches!(
        e.downcast_ref::<fair_scoring::ScoringError>(),
        Some(fair_scoring::ScoringError::Spill { .. })
    ) || matches!(
        e.downcast_ref::<fair_analysis::AnalysisError>(),
        Some(Disagreement { .. })
    ) || matches!(
        e.downcast_ref::<fair_surgery::SurgeryError>(),
        Some(fair_surgery::SurgeryError::Analysis(Disagreement { .. }))
    ) || matches!(
        e.downcast_ref::<fair_fs::FsError>(),
        Some(fair_fs::FsError::Output { .. })
    ) || matches!(
        e.downcast_ref::<fair_train::TrainError>(),
        Some(fair_train::TrainError::Setting { .. })
    );
    names_settings.then(|| flags_in(&e.to_string()))
}

/// The whole text the `fair-pruner` command prints after `error: ` for the library error
/// `e`: its [`flag_text`] where it names settings, else its [`error_text`]; [`printable`]
/// either way. Bindings use it so that their messages are the command's.
///
/// ```
/// use fair_pipeline::{PipelineError, cli_text};
/// let e = PipelineError::invalid("finetune-lr", "must be positive");
/// assert_eq!(cli_text(&e), "--finetune-lr: must be positive");
/// ```
pub fn cli_text(e: &(dyn std::error::Error + 'static)) -> String {
    match flag_text(e) {
        Some(t) => printable(&t),
        None => error_text(e),
    }
}

/// An error and its causes on one line, `outer: inner`, each cause once: a cause whose text
/// the line already contains (a library error that also names its source) is skipped, so
/// "cannot read x (os error 2)" never repeats. Works for `anyhow::Error` too (pass `&*e`).
/// The text is [`printable`]: an error that quotes a hostile file cannot send escape
/// sequences to the terminal.
pub fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut cause = Some(e);
    while let Some(c) = cause {
        let part = c.to_string();
        if !part.is_empty() && !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        cause = c.source();
    }
    printable(&text)
}

/// The longest line [`printable`] keeps, in characters.
pub const MAX_LINE_CHARS: usize = 2000;

/// `text` made safe to print on a terminal: control characters other than newline and tab
/// (escape sequences, NUL, carriage returns) are written as `\u{..}` escapes, and a line
/// longer than [`MAX_LINE_CHARS`] characters is cut, saying how much was left out. Messages
/// quote file contents (a parse error shows the offending line), so this is applied to
/// everything fair-pruner prints about its inputs.
///
/// ```
/// let t = fair_pipeline::printable("zoo = \"mlp\u{1b}[2J\"\nok");
/// assert_eq!(t, "zoo = \"mlp\\u{1b}[2J\"\nok");
/// assert!(fair_pipeline::printable(&"x".repeat(5000)).len() < 2100);
/// ```
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        for (chars, c) in line.chars().enumerate() {
            if chars == MAX_LINE_CHARS {
                let left = line.chars().count() - chars;
                out.push_str(&format!("… ({left} more characters)"));
                break;
            }
            if c.is_control() && c != '\t' {
                out.push_str(&c.escape_unicode().to_string());
            } else {
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn settings_are_named_as_the_commands_flags() {
        let invalid = |s, d| cli_text(&PipelineError::invalid(s, d));
        assert_eq!(
            invalid("finetune-lr", "must be positive"),
            "--finetune-lr: must be positive"
        );
        assert_eq!(
            invalid("goal", "no goal: give `alpha`"),
            "no goal: give --alpha"
        );
        assert_eq!(
            invalid("train", "needs `finetune-epochs`"),
            "[train]: needs --finetune-epochs"
        );
        // Through the pipeline's transparent wrappers.
        let e = PipelineError::Scoring(fair_scoring::ScoringError::Setting {
            name: "max-memory",
            detail: "too small; raise `max-memory`".into(),
        });
        assert_eq!(cli_text(&e), "--max-memory: too small; raise --max-memory");
        // The U-Score's spill file names its directory, what failed and the flags.
        let e = PipelineError::Scoring(fair_scoring::ScoringError::Spill {
            dir: "/scratch".into(),
            action: "reading back",
            source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short read"),
        });
        let text = cli_text(&e);
        assert!(
            text.contains("'/scratch' failed reading back: short read")
                && text.contains("--spill-dir names another directory for it, or none")
                && text.contains("--max-memory")
                && !text.contains('`'),
            "{text}"
        );
        let e = PipelineError::Torchrun {
            detail: "give `nproc`".into(),
            tail: String::new(),
        };
        assert_eq!(
            cli_text(&e),
            "fine-tuning with torchrun failed: give --nproc"
        );
        // Other errors are their error text, with no flag text.
        let e = E("plain `word`", Some(Box::new(E("cause", None))));
        assert_eq!(flag_text(&e), None);
        assert_eq!(cli_text(&e), "plain `word`: cause");
        let e = PipelineError::Config {
            path: None,
            detail: "`seed` is bad".into(),
        };
        assert_eq!(flag_text(&e), None);
        assert_eq!(cli_text(&e), "config: `seed` is bad");
    }

    #[test]
    fn each_cause_is_printed_once() {
        let chain = |outer, inner| E(outer, Some(Box::new(E(inner, None))));
        assert_eq!(error_text(&chain("outer", "inner")), "outer: inner");
        assert_eq!(
            error_text(&chain("cannot read x: no such file", "no such file")),
            "cannot read x: no such file"
        );
        assert_eq!(error_text(&chain("", "inner")), "inner");
        // A hostile file's bytes quoted in a message cannot reach the terminal raw.
        let e = E("bad value \u{1b}[31mred\u{0}", None);
        let t = error_text(&e);
        assert!(!t.contains('\u{1b}') && !t.contains('\u{0}'), "{t:?}");
        assert!(t.contains("\\u{1b}[31mred\\u{0}"), "{t:?}");
    }
}
