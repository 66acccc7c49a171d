//! Local rate limiting: token buckets by (policy, source identity). At most
//! `MAX_BUCKETS`: when full, buckets that have refilled are swept (at most once a
//! second), and sources beyond the cap share one overflow bucket per policy, so
//! many sources cost neither unbounded memory nor a scan per request.
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use mesh_model::l7::table::RateLimit;

const MAX_BUCKETS: usize = 100_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The source key of the shared bucket of sources beyond the cap.
const OVERFLOW: &str = "\u{0}overflow";

#[derive(Debug)]
pub struct Buckets {
    inner: Mutex<Inner>,
    max: usize,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<(String, String), Bucket>,
    last_sweep: Option<Instant>,
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets::with_max(MAX_BUCKETS)
    }
}

impl Buckets {
    pub fn with_max(max: usize) -> Buckets {
        Buckets {
            inner: Mutex::default(),
            max: max.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes one token; false when the bucket is empty.
    pub fn take(&self, limit: &RateLimit, source: &str, now: Instant) -> bool {
        let mut key = (
            limit.key.clone(),
            if limit.per_source {
                source.to_owned()
            } else {
                String::new()
            },
        );
        let rate = f64::from(limit.requests) / limit.interval.as_secs_f64();
        let burst = f64::from(limit.burst);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.map.len() >= self.max && !inner.map.contains_key(&key) {
            let due = inner
                .last_sweep
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
            if due {
                // Full buckets carry no state worth keeping.
                inner.map.retain(|_, b| {
                    b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
                });
                inner.last_sweep = Some(now);
            }
            if inner.map.len() >= self.max {
                key.1 = OVERFLOW.to_owned();
            }
        }
        let b = inner.map.entry(key).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last);
        b.tokens = (b.tokens + elapsed.as_secs_f64() * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Seconds until the next token, for Retry-After.
pub fn retry_after(limit: &RateLimit) -> u64 {
    let per_token = limit.interval.as_secs_f64() / f64::from(limit.requests.max(1));
    Duration::from_secs_f64(per_token).as_secs().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: u32, burst: u32, per_source: bool) -> RateLimit {
        RateLimit {
            key: "ns/p".into(),
            requests,
            interval: Duration::from_secs(1),
            burst,
            per_source,
            status: 429,
            body: String::new(),
            headers: Vec::new(),
        }
    }

    #[test]
    fn bucket_refills_at_its_rate() {
        let b = Buckets::default();
        let l = limit(2, 2, false);
        let t0 = Instant::now();
        assert!(b.take(&l, "a", t0));
        assert!(b.take(&l, "a", t0));
        assert!(!b.take(&l, "a", t0), "burst spent");
        assert!(
            b.take(&l, "a", t0 + Duration::from_millis(500)),
            "one token after 1/rate"
        );
        assert!(!b.take(&l, "a", t0 + Duration::from_millis(500)));
    }

    #[test]
    fn per_source_buckets_are_separate() {
        let b = Buckets::default();
        let l = limit(1, 1, true);
        let t0 = Instant::now();
        assert!(b.take(&l, "a", t0));
        assert!(!b.take(&l, "a", t0));
        assert!(b.take(&l, "b", t0), "another source has its own bucket");
        let shared = limit(1, 1, false);
        assert!(b.take(&shared, "a", t0));
        assert!(!b.take(&shared, "b", t0), "one bucket for all sources");
    }

    #[test]
    fn sources_beyond_the_cap_share_one_bucket() {
        let b = Buckets::with_max(2);
        let l = limit(1, 1, true);
        let t0 = Instant::now();
        assert!(b.take(&l, "a", t0));
        assert!(b.take(&l, "b", t0));
        // Full, and nothing refilled: c and d share the overflow bucket.
        assert!(b.take(&l, "c", t0));
        assert!(!b.take(&l, "d", t0), "d spends the same bucket as c");
        assert!(b.len() <= 3, "bounded: {}", b.len());
        // Refilled buckets are swept (once a second), making room again.
        let later = t0 + Duration::from_secs(5);
        assert!(b.take(&l, "e", later));
        assert!(b.len() <= 3, "bounded: {}", b.len());
    }
}
