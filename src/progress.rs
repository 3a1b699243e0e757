//! Progress bars for long loops, drawn on stderr only when it is a
//! terminal; schedulers and log files get the per-epoch log lines instead.

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// One bar: `label [#####.....] done/total  message`.
pub(crate) struct Progress {
    label: String,
    total: usize,
    done: usize,
    started: Instant,
    last_draw: Option<Instant>,
    on: bool,
}

impl Progress {
    /// A bar over `total` units; silent unless stderr is a terminal.
    pub(crate) fn new(label: impl Into<String>, total: usize) -> Progress {
        Progress {
            label: label.into(),
            total: total.max(1),
            done: 0,
            started: Instant::now(),
            last_draw: None,
            on: std::io::stderr().is_terminal(),
        }
    }

    /// Units per second so far.
    pub(crate) fn rate(&self) -> f64 {
        self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// Advance by `n` units and show `message` (at most ten redraws a second).
    pub(crate) fn advance(&mut self, n: usize, message: impl FnOnce() -> String) {
        self.done = (self.done + n).min(self.total);
        if !self.on || self.last_draw.is_some_and(|t| t.elapsed().as_millis() < 100) && self.done < self.total {
            return;
        }
        self.last_draw = Some(Instant::now());
        let width = 30;
        let filled = width * self.done / self.total;
        let bar: String = (0..width).map(|i| if i < filled { '#' } else { '.' }).collect();
        let mut err = std::io::stderr().lock();
        // A failed write to a terminal is not worth failing the job over.
        let _ = write!(
            err,
            "\r{} [{bar}] {}/{} {:.0}/s {}\x1b[K",
            self.label,
            self.done,
            self.total,
            self.rate(),
            message()
        );
        let _ = err.flush();
    }

    /// Clear the bar's line.
    pub(crate) fn finish(self) {
        if self.on && self.last_draw.is_some() {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }
}
