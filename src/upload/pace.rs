//! Sessions planned against the link: the upload rate measured over a
//! session, and whether a session lasts long enough for the whole file at
//! that rate. The platform cannot resume across sessions, so a session too
//! short for the link would have the file sent again and again.

use std::sync::Mutex;
use std::time::Duration;

use indicatif::HumanBytes;

/// The bytes acknowledged in the latest pipeline run of a job, and over
/// how long: its measured upload rate. Shared by the run's chunk tasks.
#[derive(Debug, Default)]
pub(crate) struct Pace(Mutex<Sample>);

#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    bytes: u64,
    elapsed: Duration,
}

/// A measurement shorter than this says little about the link.
const MIN_SAMPLE: Duration = Duration::from_millis(500);

impl Pace {
    fn with<T>(&self, f: impl FnOnce(&mut Sample) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A pipeline run starts: the measurement starts over.
    pub fn begin(&self) {
        self.with(|s| *s = Sample::default());
    }

    /// A chunk of `bytes` was acknowledged `elapsed` after the run began.
    pub fn acked(&self, bytes: u64, elapsed: Duration) {
        self.with(|s| {
            s.bytes += bytes;
            s.elapsed = s.elapsed.max(elapsed);
        });
    }

    /// Bytes per second over the latest run, when it measured enough.
    pub fn rate(&self) -> Option<f64> {
        let s = self.with(|s| *s);
        (s.bytes > 0 && s.elapsed >= MIN_SAMPLE).then(|| s.bytes as f64 / s.elapsed.as_secs_f64())
    }
}

/// A session too short for the file at the rate the link gives.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TooShort {
    /// Bytes per second.
    pub rate: f64,
    pub size: u64,
    pub needed: Duration,
    pub lifetime: Duration,
}

/// Whether sending `size` bytes at `rate` bytes/s fits in a session of
/// `lifetime`, of which the last `margin` is not used.
pub(crate) fn judge(
    size: u64,
    rate: f64,
    lifetime: Duration,
    margin: Duration,
) -> Option<TooShort> {
    if rate.is_nan() || rate <= 0.0 || lifetime.is_zero() {
        return None;
    }
    let usable = lifetime.saturating_sub(margin.min(lifetime / 4));
    let needed = Duration::from_secs_f64((size as f64 / rate).min(1e9));
    (needed > usable).then_some(TooShort {
        rate,
        size,
        needed,
        lifetime,
    })
}

impl TooShort {
    /// To the nearest second (an `expirationDate` may have no fraction).
    fn round(d: Duration) -> Duration {
        Duration::from_secs((d.as_secs_f64().round() as u64).max(1))
    }

    /// The figures, for a log line or an error.
    pub fn describe(&self) -> String {
        format!(
            "at {}/s the whole file ({}) needs about {}, but a session lasts {}",
            HumanBytes(self.rate as u64),
            HumanBytes(self.size),
            humantime::format_duration(Self::round(self.needed)),
            humantime::format_duration(Self::round(self.lifetime)),
        )
    }

    /// The job's error after the second session lost this way.
    pub fn failure(&self, max_rate: u64) -> String {
        let limit = if max_rate > 0 {
            format!(
                "raise or lift upload.max_rate (now {}/s)",
                HumanBytes(max_rate)
            )
        } else {
            "check that no other limit slows the uploads".to_string()
        };
        format!(
            "the platform's sessions are too short for this link: two sessions expired before the file was sent; \
             {} (rate measured over the last session). What would help: more chunks at once (upload.parallel_chunks), \
             {limit}, or a faster link",
            self.describe()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_file_that_needs_longer_than_a_session_is_judged_too_short() {
        // 100 MB at 1 MB/s: 100 s, in a 60 s session.
        let t = judge(100_000_000, 1e6, S(60), S(10)).unwrap();
        assert_eq!(t.needed, S(100));
        let msg = t.failure(1 << 20);
        for part in [
            "1.00 MiB/s",
            "1m",
            "upload.parallel_chunks",
            "upload.max_rate",
            "faster link",
        ] {
            assert!(msg.contains(part), "{part} in {msg}");
        }
        // 40 s fits in 60 s less the margin (at most a quarter: 15 s).
        assert_eq!(judge(40_000_000, 1e6, S(60), S(60)), None);
        assert!(judge(50_000_000, 1e6, S(60), S(60)).is_some());
        assert_eq!(judge(1, 0.0, S(60), S(1)), None);
    }

    #[test]
    fn the_pace_needs_a_long_enough_sample() {
        let p = Pace::default();
        assert_eq!(p.rate(), None);
        p.acked(1000, Duration::from_millis(100));
        assert_eq!(p.rate(), None);
        p.acked(1000, S(1));
        assert_eq!(p.rate(), Some(2000.0));
        p.begin();
        assert_eq!(p.rate(), None);
    }
}
