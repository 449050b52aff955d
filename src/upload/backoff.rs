//! Capped exponential backoff with full jitter, honouring `Retry-After`.

use std::time::Duration;

/// Backoff state for one sequence of retries.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Backoff from `initial` up to `max` (not below `initial`).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The ceiling for the current attempt: `initial * 2^attempt`, capped.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32 << self.attempt.min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The wait before the next try: a random point in `[0, ceiling]` (full
    /// jitter spreads out clients that failed together), but never less than
    /// what the platform asked for with `Retry-After`.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let jittered = ceiling.mul_f64(fastrand::f64());
        match retry_after {
            Some(ra) => ra.max(jittered.min(self.initial)),
            None => jittered,
        }
    }

    /// Starts over from `initial` (once the trouble is over).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let ceilings: Vec<u128> = (0..8)
            .map(|_| {
                let c = b.ceiling();
                let d = b.next_delay(None);
                assert!(d <= c);
                c.as_millis()
            })
            .collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn never_waits_less_than_retry_after() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(20));
        for _ in 0..50 {
            assert!(b.next_delay(Some(Duration::from_secs(3))) >= Duration::from_secs(3));
        }
    }

    #[test]
    fn survives_huge_attempt_counts() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..10_000 {
            assert!(b.next_delay(None) <= Duration::from_secs(60));
        }
    }
}
