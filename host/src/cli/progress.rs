//! The CLI's [`Progress`]: one bar at a time on stderr (hidden when stderr
//! is not a terminal or `--json` wants a clean stream), notes as lines.

use crate::progress::Progress;
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Mutex;

pub struct Bars {
    show: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bars {
    /// Bars when `show` and stderr is a terminal; notes are printed always.
    pub fn new(show: bool) -> Self {
        Self {
            show: show && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            bar: Mutex::new(None),
        }
    }
}

impl Progress for Bars {
    fn begin(&self, what: &str, steps: u64) {
        if !self.show {
            return;
        }
        let bar = ProgressBar::new(steps);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:40}] {pos}/{len} {msg} {elapsed_precise} eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_prefix(what.to_string());
        if let Some(old) = self.bar.lock().unwrap().replace(bar) {
            old.finish_and_clear();
        }
    }

    fn advance(&self, n: u64, status: Option<&str>) {
        if let Some(bar) = self.bar.lock().unwrap().as_ref() {
            if let Some(s) = status {
                bar.set_message(s.to_string());
            }
            bar.inc(n);
        }
    }

    fn end(&self) {
        if let Some(bar) = self.bar.lock().unwrap().take() {
            bar.finish_and_clear();
        }
    }

    fn note(&self, line: &str) {
        match self.bar.lock().unwrap().as_ref() {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}
