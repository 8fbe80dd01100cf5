//! Which paths a run reads, for the output guard (`fair_fs::OutputGuard`): no output may be
//! one of them, hold one, or — for directories of data — lie inside one.

use std::path::Path;

use fair_fs::OutputGuard;

use crate::config::RunConfig;

/// The output guard every command starts from: the dataset cache
/// (`fair_data::cache_dir`) is a tree of inputs, whatever the command reads.
pub fn output_guard() -> OutputGuard {
    let mut guard = OutputGuard::new();
    guard.tree("the dataset cache", &fair_data::cache_dir());
    guard
}

/// Registers the model file `path` (named `what` in errors, e.g. `` `graph` ``) as an input:
/// the file itself and, for an ONNX model, the external data files it names.
pub fn guard_model_file(guard: &mut OutputGuard, what: &str, path: &Path) {
    guard.input(what, path);
    if crate::onnx::is_onnx(path) {
        // A model that cannot be read fails later with its own error; here only the files it
        // names matter.
        for data in fair_onnx::external_data_files(path).unwrap_or_default() {
            guard.input(&format!("{what} external data"), &data);
        }
    }
}

impl RunConfig {
    /// The output guard of a run of this configuration (read from `config_path`, if any):
    /// the config file, the model's graph (with an ONNX model's external data) and weights
    /// are inputs; the data directory (`[data] path`) and the dataset cache
    /// (`fair_data::cache_dir`) are trees, no file of which may be written. Errors name each
    /// input by its setting in backticks (`` `config` ``, `` `graph` ``, `` `weights` ``,
    /// `` `data-path` ``), as [`crate::PipelineError`]s do, so a caller can respell them
    /// (the CLI prints its flags).
    ///
    /// ```
    /// use fair_pipeline::RunConfig;
    /// let dir = tempfile::tempdir()?;
    /// std::fs::create_dir(dir.path().join("mnist"))?;
    /// let mut config = RunConfig::default();
    /// config.data.path = Some(dir.path().join("mnist"));
    /// let guard = config.output_guard(None);
    /// let e = guard.file("`out`", &dir.path().join("mnist/train-images-idx3-ubyte"));
    /// assert!(e.unwrap_err().to_string().contains("lies inside `data-path`"));
    /// assert!(guard.file("`out`", &dir.path().join("model.safetensors")).is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn output_guard(&self, config_path: Option<&Path>) -> OutputGuard {
        let mut guard = output_guard();
        if let Some(p) = config_path {
            guard.input("`config`", p);
        }
        if let Some(p) = &self.model.graph {
            guard_model_file(&mut guard, "`graph`", p);
        }
        if let Some(p) = &self.model.weights {
            guard.input("`weights`", p);
        }
        if let Some(p) = &self.data.path {
            guard.tree("`data-path`", p);
        }
        guard
    }
}
