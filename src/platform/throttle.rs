//! `upload.max_rate`: one token bucket shared by every upload of the
//! process, applied inside the chunk request bodies as they stream.
//!
//! A body is handed to the HTTP client in slices of [`SLICE`] bytes, each
//! taken from the bucket first, so the rate holds within a slice of every
//! request however large the chunks are. The bucket is a small one of our
//! own rather than `governor`: it must sleep on tokio's clock (so the tests
//! run on the paused clock, and a rate change on SIGHUP applies to the very
//! next slice), and it is thirty lines.
//!
//! Taking is a reservation: a taker that finds too few tokens takes them
//! anyway (the bucket goes into debt) and sleeps until the debt is paid, so
//! concurrent takers share the rate in arrival order and nothing spins.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::Instant;

/// Bytes a body sends per take from the bucket.
pub const SLICE: usize = 64 * 1024;
/// Tokens an idle bucket saves up, as time at the rate (never less than a
/// slice): a burst this short moves a 10 s average by under 1%.
const BURST: Duration = Duration::from_millis(50);

/// The process's upload rate limit. Cheap to clone; clones share it.
#[derive(Clone, Default)]
pub struct RateLimit {
    /// Bytes per second; 0 = no limit. Read without the lock on every slice.
    rate: Arc<AtomicU64>,
    bucket: Arc<Mutex<Bucket>>,
}

#[derive(Default)]
struct Bucket {
    /// May be negative: reserved ahead.
    tokens: f64,
    last: Option<Instant>,
}

impl RateLimit {
    /// Bytes per second; 0 means no limit.
    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Changes the rate; takes effect with the next slice of every body.
    pub fn set_rate(&self, bytes_per_sec: u64) {
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.rate.swap(bytes_per_sec, Ordering::Relaxed);
        if old == 0 {
            // Coming from no limit: start from an empty bucket.
            *b = Bucket::default();
        }
    }

    fn burst(rate: u64) -> f64 {
        (rate as f64 * BURST.as_secs_f64()).max(SLICE as f64)
    }

    /// Takes `n` bytes' worth of tokens, waiting as long as the rate needs.
    pub async fn take(&self, n: usize) {
        if let Some(wait) = self.reserve(n) {
            tokio::time::sleep(wait).await;
        }
    }

    /// Reserves `n` bytes; how long to wait before sending them.
    fn reserve(&self, n: usize) -> Option<Duration> {
        let rate = self.rate();
        if rate == 0 {
            return None;
        }
        let now = Instant::now();
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let earned = b
            .last
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64() * rate as f64);
        b.tokens = (b.tokens + earned).min(Self::burst(rate)) - n as f64;
        b.last = Some(now);
        (b.tokens < 0.0).then(|| Duration::from_secs_f64(-b.tokens / rate as f64))
    }

    /// `data` as a body stream that takes from the bucket before each slice.
    /// With no limit the whole rest goes at once.
    pub fn stream(
        &self,
        data: Bytes,
    ) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static {
        let limit = self.clone();
        futures_util::stream::unfold(data, move |mut rest| {
            let limit = limit.clone();
            async move {
                if rest.is_empty() {
                    return None;
                }
                if limit.rate() == 0 {
                    return Some((Ok(std::mem::take(&mut rest)), rest));
                }
                let piece = rest.split_to(rest.len().min(SLICE));
                limit.take(piece.len()).await;
                Some((Ok(piece), rest))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    const MIB: u64 = 1 << 20;

    /// Sends `bytes` through `tasks` concurrent bodies; the time it took.
    async fn send(limit: &RateLimit, tasks: usize, bytes: usize) -> Duration {
        let t0 = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..tasks {
            let s = limit.stream(Bytes::from(vec![0u8; bytes / tasks]));
            set.spawn(async move {
                s.map(|b| b.unwrap().len())
                    .fold(0, |a, n| async move { a + n })
                    .await
            });
        }
        let mut total = 0;
        while let Some(n) = set.join_next().await {
            total += n.unwrap();
        }
        assert_eq!(total, bytes / tasks * tasks);
        t0.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn one_mib_per_second_holds_within_five_percent_over_ten_seconds() {
        let limit = RateLimit::default();
        limit.set_rate(MIB);
        for tasks in [1, 4] {
            let took = send(&limit, tasks, 10 * MIB as usize).await.as_secs_f64();
            assert!((9.5..=10.5).contains(&took), "{tasks} bodies: {took} s");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_high_rate_is_as_accurate() {
        let limit = RateLimit::default();
        limit.set_rate(100 * MIB);
        let took = send(&limit, 8, 1000 * MIB as usize).await.as_secs_f64();
        assert!((9.5..=10.5).contains(&took), "{took} s");
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_sends_at_once_and_a_new_rate_applies_to_the_next_slice() {
        let limit = RateLimit::default();
        assert_eq!(send(&limit, 2, 64 * MIB as usize).await, Duration::ZERO);
        // Whole bodies at once without a limit.
        let mut s = Box::pin(limit.stream(Bytes::from(vec![1u8; 300_000])));
        assert_eq!(s.next().await.unwrap().unwrap().len(), 300_000);
        limit.set_rate(MIB);
        let took = send(&limit, 1, MIB as usize).await.as_secs_f64();
        assert!((0.9..=1.05).contains(&took), "{took} s");
        limit.set_rate(4 * MIB);
        let took = send(&limit, 1, 4 * MIB as usize).await.as_secs_f64();
        assert!((0.9..=1.05).contains(&took), "{took} s");
        limit.set_rate(0);
        assert_eq!(send(&limit, 1, 4 * MIB as usize).await, Duration::ZERO);
    }
}
