//! A one-line progress bar on stderr (redrawn in place on a terminal; one line per phase
//! change otherwise, so CI logs stay short).

use std::io::{IsTerminal, Write};

/// Where progress goes.
pub struct Progress {
    tty: bool,
    quiet: bool,
    last_phase: std::sync::Mutex<String>,
}

impl Progress {
    /// `quiet`: print nothing.
    pub fn new(quiet: bool) -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            quiet,
            last_phase: Default::default(),
        }
    }

    /// Draws `label [=====>    ] phase msg` with `fraction` (0–1) done.
    pub fn draw(&self, label: &str, fraction: f64, phase: &str, msg: &str) {
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.tty {
            const WIDTH: usize = 30;
            let done = ((fraction.clamp(0.0, 1.0)) * WIDTH as f64) as usize;
            let bar: String = (0..WIDTH)
                .map(|i| {
                    if i < done {
                        '='
                    } else if i == done {
                        '>'
                    } else {
                        ' '
                    }
                })
                .collect();
            let _ = write!(err, "\r\x1b[2K{label} [{bar}] {phase:<7} {msg}");
            let _ = err.flush();
        } else {
            let mut last = self.last_phase.lock().expect("progress lock");
            if *last != phase {
                *last = phase.to_owned();
                let _ = writeln!(err, "{label}: {phase} ({msg})");
            }
        }
    }

    /// Ends the line.
    pub fn finish(&self) {
        if !self.quiet && self.tty {
            let _ = writeln!(std::io::stderr());
        }
        self.last_phase.lock().expect("progress lock").clear();
    }
}
