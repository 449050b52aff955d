//! The emulator's knobs: where it keeps data, how it misbehaves, how fast it
//! answers. Validated once at start so a handler never meets a rate outside
//! `0.0..=1.0` or a zero chunk limit.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Options of one emulator instance. `Default` gives a well-behaved platform:
/// no faults, no latency, 10 minute sessions, a clock in step with the
/// client's, two IN_PROGRESS polls.
/// `Debug` redacts the API key.
#[derive(Clone)]
pub struct EmulatorOptions {
    /// `None`: any non-empty `x-api-key` is accepted; `Some(k)`: only `k`.
    pub api_key: Option<String>,
    /// Where sessions, chunks and assembled models live. `None`: a private
    /// temporary directory removed when the emulator stops.
    pub data_dir: Option<PathBuf>,
    /// Any of the four endpoints: answer 500 before doing anything.
    pub fail_rate: f64,
    /// Chunk uploads only: store the chunk, then answer 502.
    pub lost_ack_rate: f64,
    /// Chunk uploads only: drop the connection mid-body, store nothing.
    pub reset_rate: f64,
    /// Any endpoint: answer 429 with `Retry-After`.
    pub rate_limit_rate: f64,
    /// The `Retry-After` of injected 429s (whole seconds, rounded up).
    pub retry_after: Duration,
    /// Added to every request before it is answered.
    pub latency: Duration,
    /// `expirationDate` = session start + this.
    pub session_ttl: Duration,
    /// How far the emulator's clock runs behind the client's: answered
    /// `expirationDate`s are this much earlier than the moment the session
    /// really expires (which stays start + `session_ttl`). Past `session_ttl`,
    /// sessions look expired on arrival while they take chunks.
    pub clock_behind: Duration,
    /// IN_PROGRESS dock-status answers before the final one.
    pub import_polls: u32,
    /// Benchmark mode: hash and count each chunk, keep no bytes, write nothing.
    pub discard: bool,
    /// A chunk's file part larger than this is answered with 413.
    pub max_chunk_size: u64,
    /// Hash each received chunk (its report's `sha256`). Benchmarks turn it
    /// off so the client's own costs show; the report's `sha256` is then
    /// empty. The assembled archive is hashed either way.
    pub hash_chunks: bool,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        Self {
            api_key: None,
            data_dir: None,
            fail_rate: 0.0,
            lost_ack_rate: 0.0,
            reset_rate: 0.0,
            rate_limit_rate: 0.0,
            retry_after: Duration::from_secs(1),
            latency: Duration::ZERO,
            session_ttl: Duration::from_secs(10 * 60),
            clock_behind: Duration::ZERO,
            import_polls: 2,
            discard: false,
            max_chunk_size: 256 * 1024 * 1024,
            hash_chunks: true,
        }
    }
}

impl fmt::Debug for EmulatorOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatorOptions")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("data_dir", &self.data_dir)
            .field("fail_rate", &self.fail_rate)
            .field("lost_ack_rate", &self.lost_ack_rate)
            .field("reset_rate", &self.reset_rate)
            .field("rate_limit_rate", &self.rate_limit_rate)
            .field("retry_after", &self.retry_after)
            .field("latency", &self.latency)
            .field("session_ttl", &self.session_ttl)
            .field("clock_behind", &self.clock_behind)
            .field("import_polls", &self.import_polls)
            .field("discard", &self.discard)
            .field("max_chunk_size", &self.max_chunk_size)
            .field("hash_chunks", &self.hash_chunks)
            .finish()
    }
}

impl EmulatorOptions {
    /// The fault rates part of the options.
    pub fn fault_rates(&self) -> FaultRates {
        FaultRates {
            fail_rate: self.fail_rate,
            lost_ack_rate: self.lost_ack_rate,
            reset_rate: self.reset_rate,
            rate_limit_rate: self.rate_limit_rate,
        }
    }

    /// Rejects options no handler could honour, naming the option.
    pub(crate) fn validate(&self) -> io::Result<()> {
        let rates = [
            ("fail_rate", self.fail_rate),
            ("lost_ack_rate", self.lost_ack_rate),
            ("reset_rate", self.reset_rate),
            ("rate_limit_rate", self.rate_limit_rate),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(invalid(format!(
                    "{name} must be within 0.0..=1.0, got {rate}"
                )));
            }
        }
        if self.max_chunk_size == 0 {
            return Err(invalid("max_chunk_size must be at least 1".to_owned()));
        }
        if self.session_ttl.is_zero() {
            return Err(invalid("session_ttl must be longer than zero".to_owned()));
        }
        if matches!(&self.api_key, Some(k) if k.is_empty()) {
            return Err(invalid("api_key must not be empty".to_owned()));
        }
        Ok(())
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// The fault rates that can change while the emulator runs. Each is a
/// probability in `0.0..=1.0`, rolled independently per request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultRates {
    /// Any endpoint: answer 500 before doing anything.
    pub fail_rate: f64,
    /// Chunk uploads only: store the chunk, then answer 502.
    pub lost_ack_rate: f64,
    /// Chunk uploads only: drop the connection mid-body, store nothing.
    pub reset_rate: f64,
    /// Any endpoint: answer 429 with `Retry-After`.
    pub rate_limit_rate: f64,
}

impl FaultRates {
    /// Brings every rate into `0.0..=1.0` (NaN counts as 0): a run-time change
    /// has no error path, so an out-of-range rate means "never" or "always".
    pub(crate) fn clamped(self) -> Self {
        let clamp = |r: f64| if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) };
        Self {
            fail_rate: clamp(self.fail_rate),
            lost_ack_rate: clamp(self.lost_ack_rate),
            reset_rate: clamp(self.reset_rate),
            rate_limit_rate: clamp(self.rate_limit_rate),
        }
    }
}

/// One roll of the dice: true with probability `rate`.
pub(crate) fn roll(rate: f64) -> bool {
    // fastrand::f64() is in [0, 1), so a rate of 1.0 always fires and 0.0 never.
    rate > 0.0 && fastrand::f64() < rate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_rates_outside_unit_interval() {
        let opts = EmulatorOptions {
            reset_rate: 1.5,
            ..EmulatorOptions::default()
        };
        let err = opts.validate().unwrap_err();
        assert!(err.to_string().contains("reset_rate"), "{err}");
        let nan = EmulatorOptions {
            fail_rate: f64::NAN,
            ..EmulatorOptions::default()
        };
        assert!(nan.validate().is_err());
        assert!(EmulatorOptions::default().validate().is_ok());
    }

    #[test]
    fn clamps_runtime_rates() {
        let r = FaultRates {
            fail_rate: -1.0,
            lost_ack_rate: 2.0,
            reset_rate: f64::NAN,
            rate_limit_rate: 0.5,
        }
        .clamped();
        assert_eq!(r.fail_rate, 0.0);
        assert_eq!(r.lost_ack_rate, 1.0);
        assert_eq!(r.reset_rate, 0.0);
        assert_eq!(r.rate_limit_rate, 0.5);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let opts = EmulatorOptions {
            api_key: Some("s3cret-key".to_owned()),
            ..EmulatorOptions::default()
        };
        let shown = format!("{opts:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn roll_extremes_are_certain() {
        for _ in 0..1000 {
            assert!(roll(1.0));
            assert!(!roll(0.0));
        }
    }
}
