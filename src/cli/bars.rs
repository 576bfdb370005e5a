//! Progress bars: indicatif bars on standard error, only when it is a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use spindiff::Progress;

/// indicatif bars on stderr, only when it is a terminal.
pub struct Bars {
    bar: std::sync::Mutex<Option<ProgressBar>>,
    /// Shown before each bar: which target of a many-targets diff (`[2/4] spin-fr.iso`).
    label: std::sync::Mutex<String>,
    /// The labels of a many-targets diff's targets, in order.
    targets: std::sync::Mutex<Vec<String>>,
    enabled: bool,
}

impl Bars {
    pub fn new(quiet: bool) -> Bars {
        Bars {
            bar: std::sync::Mutex::new(None),
            label: std::sync::Mutex::new(String::new()),
            targets: std::sync::Mutex::new(Vec::new()),
            enabled: !quiet && std::io::stderr().is_terminal(),
        }
    }

    /// The labels of the targets of the many-targets diff that follows (see
    /// [`Progress::begin_target`]).
    pub fn set_targets(&self, labels: Vec<String>) {
        *self.targets.lock().unwrap() = labels;
    }
}

impl Progress for Bars {
    fn start(&self, phase: &str, total: u64) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg}{prefix:>6} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap()
            .progress_chars("=> "),
        );
        bar.set_prefix(phase.to_string());
        let label = self.label.lock().unwrap();
        if !label.is_empty() {
            bar.set_message(format!("{label} "));
        }
        *self.bar.lock().unwrap() = Some(bar);
    }
    fn advance(&self, bytes: u64) {
        if let Some(b) = self.bar.lock().unwrap().as_ref() {
            b.inc(bytes);
        }
    }
    fn finish(&self) {
        if let Some(b) = self.bar.lock().unwrap().take() {
            b.finish_and_clear();
        }
    }
    fn begin_target(&self, index: usize) {
        let label = self.targets.lock().unwrap().get(index).cloned();
        *self.label.lock().unwrap() = label.unwrap_or_default();
    }
}
