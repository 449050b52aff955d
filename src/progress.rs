//! Shows a running job's progress: a bar on a terminal, plain lines otherwise.
//!
//! Progress counts bytes the platform acknowledged (never above 100%); a new
//! session starts the count again from what it holds.
// Progress lines are this module's output.
#![allow(clippy::print_stderr)]

use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use crate::escaped::Escaped;
use crate::job::JobState;
use crate::upload::JobProgress;

/// A bar drawn on stderr, hidden until the job starts.
pub fn terminal_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        // The template is a constant that is known to parse.
        .expect("valid progress template")
        .progress_chars("=> "),
    );
    bar
}

fn describe(p: &JobProgress) -> String {
    match p.state {
        JobState::Uploading => {
            format!("{} {}/{} chunks", p.state, p.chunks_done, p.chunks_total)
        }
        other => other.to_string(),
    }
}

/// Follows `rx` until its sender is dropped, drawing on `bar` or printing
/// plain lines (at most every `every`, and at each state change). `name` is
/// shown as given (escape it first); notes are escaped here.
pub async fn follow(
    mut rx: watch::Receiver<JobProgress>,
    name: String,
    bar: Option<ProgressBar>,
    every: Duration,
) {
    let mut last_state = None;
    let mut last_line = Instant::now() - every;
    let mut last_note: Option<String> = None;
    let start = Instant::now();
    let mut start_bytes = None;
    loop {
        let p = rx.borrow_and_update().clone();
        match &bar {
            Some(bar) => {
                bar.set_length(p.bytes_total);
                bar.set_position(p.bytes_done.min(p.bytes_total));
                bar.set_message(describe(&p));
                if p.note != last_note {
                    if let Some(n) = &p.note {
                        bar.println(format!("{name}: {}", Escaped::str(n)));
                    }
                }
            }
            None => {
                let changed = last_state != Some(p.state);
                if changed
                    || last_line.elapsed() >= every
                    || p.note != last_note && p.note.is_some()
                {
                    let base = *start_bytes.get_or_insert(p.bytes_done);
                    let secs = start.elapsed().as_secs_f64().max(0.001);
                    let rate = (p.bytes_done.saturating_sub(base)) as f64 / secs;
                    let pct = if p.bytes_total == 0 {
                        100.0
                    } else {
                        p.bytes_done.min(p.bytes_total) as f64 * 100.0 / p.bytes_total as f64
                    };
                    let mut line = format!(
                        "{name}: {} ({} of {}, {pct:.0}%, {}/s)",
                        describe(&p),
                        HumanBytes(p.bytes_done.min(p.bytes_total)),
                        HumanBytes(p.bytes_total),
                        HumanBytes(rate as u64)
                    );
                    if let Some(n) = &p.note {
                        line.push_str(&format!("; {}", Escaped::str(n)));
                    }
                    eprintln!("{line}");
                    last_line = Instant::now();
                }
            }
        }
        last_state = Some(p.state);
        last_note = p.note.clone();
        if rx.changed().await.is_err() {
            break;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}
