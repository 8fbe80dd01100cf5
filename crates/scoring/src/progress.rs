//! Progress bars for long scoring loops (hidden when quiet or when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

/// Whether to show progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Show bars (they still stay hidden when stderr is not a terminal).
    pub enabled: bool,
}

impl Progress {
    /// No bars.
    pub const QUIET: Progress = Progress { enabled: false };

    pub(crate) fn bar(&self, len: usize, what: &str) -> ProgressBar {
        if !self.enabled {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg:<28} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message(what.to_owned());
        bar
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress { enabled: true }
    }
}
