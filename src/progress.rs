//! Shows a running job's progress: a bar on a terminal, plain lines
//! otherwise, JSON events when logs are JSON.
//!
//! Progress counts bytes the platform acknowledged (never above 100%); a new
//! session starts the count again from what it holds. The rate is measured
//! over the chunk phase only ([`Rate`]): the time spent completing and
//! polling dock status sends nothing and would only dilute it. Plain lines
//! come once per state change and every few seconds; passing problems
//! (retries) are the engine's own warnings, so they are not repeated here.

use std::time::{Duration, Instant};

use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use crate::escaped::Escaped;
use crate::job::JobState;
use crate::upload::JobProgress;

/// How progress is shown.
pub enum Display {
    /// A bar on the terminal (stderr).
    Bar(ProgressBar),
    /// Plain text lines on stderr.
    Lines,
    /// `info` events through the log (JSON lines when logs are JSON).
    Events,
}

/// A bar drawn on stderr naming `name` (shown as given: escape it first),
/// empty until bytes are acknowledged.
pub fn terminal_bar(name: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {msg}")
            // The template is a constant that is known to parse.
            .expect("valid progress template")
            .progress_chars("=> "),
    );
    bar.set_prefix(short(name, 40));
    bar.set_message(JobState::Queued.to_string());
    bar
}

/// `name` cut to at most `max` characters, with `…` where it was cut.
fn short(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        return name.to_string();
    }
    let kept: String = name.chars().take(max.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// The upload rate over the chunk phase: from the first moment the job is
/// seen `uploading` (and the bytes acknowledged then) to the moment it
/// leaves `uploading`, after which the rate stays what it was.
#[derive(Debug, Default)]
pub struct Rate {
    start: Option<(Instant, u64)>,
    end: Option<(Instant, u64)>,
}

impl Rate {
    /// Takes in the job's state and acknowledged bytes at `now`.
    pub fn observe(&mut self, state: JobState, bytes: u64, now: Instant) {
        match (state, self.start) {
            (JobState::Uploading, None) => self.start = Some((now, bytes)),
            (JobState::Uploading, Some(_)) => self.end = None,
            (_, Some(_)) if self.end.is_none() => self.end = Some((now, bytes)),
            _ => {}
        }
    }

    /// Bytes per second over the chunk phase so far; `None` before it.
    pub fn per_sec(&self, bytes: u64, now: Instant) -> Option<f64> {
        let (t0, b0) = self.start?;
        let (t1, b1) = self.end.unwrap_or((now, bytes));
        let secs = t1.saturating_duration_since(t0).as_secs_f64();
        (secs > 0.0).then(|| b1.saturating_sub(b0) as f64 / secs)
    }
}

fn describe(p: &JobProgress) -> String {
    match p.state {
        JobState::Uploading => {
            format!("{} {}/{} chunks", p.state, p.chunks_done, p.chunks_total)
        }
        other => other.to_string(),
    }
}

/// Follows `rx` until its sender is dropped, showing it as `display` says:
/// a line (or event) at each state change and at most every `every`
/// otherwise. `name` is shown as given (escape it first).
pub async fn follow(
    mut rx: watch::Receiver<JobProgress>,
    name: String,
    display: Display,
    every: Duration,
) {
    let mut last_state = None;
    let mut last_line = Instant::now();
    let mut rate = Rate::default();
    // The first value is a placeholder until the engine has read the job
    // (a file already imported never gets further): nothing to show yet.
    let mut ended = rx.changed().await.is_err();
    while !ended {
        let p = rx.borrow_and_update().clone();
        let now = Instant::now();
        let done = p.bytes_done.min(p.bytes_total);
        rate.observe(p.state, done, now);
        let per_sec = rate.per_sec(done, now);
        let changed = last_state != Some(p.state);
        match &display {
            Display::Bar(bar) => {
                if p.bytes_total > 0 {
                    bar.set_length(p.bytes_total);
                }
                bar.set_position(done);
                let mut msg = describe(&p);
                if let Some(r) = per_sec.filter(|r| *r > 0.0) {
                    msg.push_str(&format!(", {}/s", HumanBytes(r as u64)));
                    if p.state == JobState::Uploading {
                        let left = p.bytes_total.saturating_sub(done) as f64 / r;
                        let eta = HumanDuration(Duration::from_secs_f64(left.min(1e9)));
                        msg.push_str(&format!(", {eta} left"));
                    }
                }
                bar.set_message(msg);
            }
            Display::Lines | Display::Events if changed || last_line.elapsed() >= every => {
                let pct = if p.bytes_total == 0 {
                    100.0
                } else {
                    done as f64 * 100.0 / p.bytes_total as f64
                };
                if let Display::Lines = display {
                    let mut line = format!(
                        "{name}: {} ({} of {}, {pct:.0}%",
                        describe(&p),
                        HumanBytes(done),
                        HumanBytes(p.bytes_total),
                    );
                    if let Some(r) = per_sec {
                        line.push_str(&format!(", {}/s", HumanBytes(r as u64)));
                    }
                    line.push(')');
                    // The retry being waited out, if any (the engine warned
                    // when it happened; this says it is still the case).
                    if let Some(n) = &p.note {
                        line.push_str(&format!("; {}", Escaped::str(n)));
                    }
                    crate::telemetry::eprint_at(tracing::Level::INFO, &line);
                } else {
                    tracing::info!(
                        file = %name,
                        state = %p.state,
                        chunks_done = p.chunks_done,
                        chunks_total = p.chunks_total,
                        bytes_done = done,
                        bytes_total = p.bytes_total,
                        bytes_per_sec = per_sec.map(|r| r as u64),
                        note = p.note.as_deref().map(|n| Escaped::str(n).to_string()),
                        "progress"
                    );
                }
                last_line = now;
            }
            Display::Lines | Display::Events => {}
        }
        last_state = Some(p.state);
        ended = rx.changed().await.is_err();
    }
    if let Display::Bar(bar) = display {
        bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_covers_the_chunk_phase_only() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut r = Rate::default();
        r.observe(JobState::Queued, 0, s(0));
        assert_eq!(r.per_sec(0, s(0)), None);
        // Resumed with 100 bytes acknowledged: only new bytes count.
        r.observe(JobState::Uploading, 100, s(10));
        r.observe(JobState::Uploading, 600, s(15));
        assert_eq!(r.per_sec(600, s(15)), Some(100.0));
        r.observe(JobState::Completing, 1100, s(20));
        // Polling dock status for a minute changes nothing.
        r.observe(JobState::Importing, 1100, s(80));
        assert_eq!(r.per_sec(1100, s(80)), Some(100.0));
    }

    #[test]
    fn long_names_are_shortened_for_the_bar() {
        assert_eq!(short("m.tar", 10), "m.tar");
        assert_eq!(short("abcdefghijkl", 5), "abcd…");
    }

    #[test]
    fn the_bar_names_the_file_and_starts_empty() {
        let bar = terminal_bar("model.tar", 1000);
        assert_eq!(bar.position(), 0);
        assert_eq!(bar.length(), Some(1000));
        assert_eq!(bar.prefix(), "model.tar");
    }
}
