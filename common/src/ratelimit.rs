//! A byte-rate token bucket (governor's GCRA) shared by every task of an agent.
//! Governor's quota is fixed per limiter, so a rate change swaps the bucket.

use crate::ByteRate;
use governor::{DefaultDirectRateLimiter, Quota};
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};

/// The bucket for one rate; replaced whole when the rate changes.
struct Bucket {
    rate: ByteRate,
    limiter: DefaultDirectRateLimiter,
    /// Bytes per governor cell: 1, or 1 KiB when the rate does not fit a u32.
    cell: u64,
    /// Largest number of cells one wait may ask for.
    burst: NonZeroU32,
}

impl Bucket {
    fn new(rate: ByteRate) -> Self {
        let bytes = rate.0.max(1);
        let cell = if bytes > u64::from(u32::MAX) { 1024 } else { 1 };
        let per_sec = u32::try_from(bytes.div_ceil(cell)).unwrap_or(u32::MAX);
        // Bursts of a tenth of a second, and never less than 64 KiB, so one
        // network read never has to wait for a rate that tiny reads would meet.
        let burst = (per_sec / 10).max(u32::try_from(65536 / cell).unwrap_or(1));
        let per_sec = NonZeroU32::new(per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Self {
            rate,
            limiter: DefaultDirectRateLimiter::direct(
                Quota::per_second(per_sec).allow_burst(burst),
            ),
            cell,
            burst,
        }
    }
}

/// A byte rate limit whose rate can change at run time (settings pushed by
/// the operator): a change applies to the next `acquire`.
pub struct RateLimiter {
    bucket: RwLock<Arc<Bucket>>,
}

impl RateLimiter {
    pub fn new(rate: ByteRate) -> Self {
        Self {
            bucket: RwLock::new(Arc::new(Bucket::new(rate))),
        }
    }

    pub fn rate(&self) -> ByteRate {
        self.current().rate
    }

    /// Changes the rate; a no-op when it is unchanged (keeps the bucket's state).
    pub fn set_rate(&self, rate: ByteRate) {
        if self.rate() == rate {
            return;
        }
        let fresh = Arc::new(Bucket::new(rate));
        // A poisoned lock only means a writer panicked mid-swap of an Arc;
        // the value inside is still a whole bucket.
        *self.bucket.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    }

    fn current(&self) -> Arc<Bucket> {
        self.bucket
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until `bytes` may pass.
    pub async fn acquire(&self, bytes: usize) {
        let b = self.current();
        let mut cells = (bytes as u64).div_ceil(b.cell);
        while cells > 0 {
            let n = cells.min(u64::from(b.burst.get()));
            cells -= n;
            // n is in 1..=burst, so it is non-zero and never over capacity.
            if let Some(n) = NonZeroU32::new(n as u32) {
                let _ = b.limiter.until_n_ready(n).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn holds_the_rate() {
        // 1 MiB/s with a ~100 KiB burst: 600 KiB should take about half a second.
        let rl = RateLimiter::new(ByteRate(1 << 20));
        let t = Instant::now();
        for _ in 0..40 {
            rl.acquire(15 * 1024).await;
        }
        let s = t.elapsed().as_secs_f64();
        assert!(s > 0.35, "600 KiB at 1 MiB/s passed in {s}s");
    }

    #[tokio::test]
    async fn a_lowered_rate_applies_to_the_next_acquire() {
        let rl = RateLimiter::new(ByteRate(1 << 40));
        rl.set_rate(ByteRate(1 << 20));
        assert_eq!(rl.rate(), ByteRate(1 << 20));
        let t = Instant::now();
        for _ in 0..40 {
            rl.acquire(15 * 1024).await;
        }
        let s = t.elapsed().as_secs_f64();
        assert!(s > 0.35, "600 KiB after lowering to 1 MiB/s passed in {s}s");
    }
}
