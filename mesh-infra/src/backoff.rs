//! The one backoff: exponential from `min` to `max`, with jitter; for accept loops
//! (a failing accept, e.g. out of file descriptors, must not spin a core), reconnects
//! and retries.
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    /// Full jitter: a wait is uniform in [0, next]; else in [next, 1.5 next].
    full_jitter: bool,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            next: min,
            full_jitter: false,
        }
    }

    /// Accept loops: 5 ms growing to 1 s.
    pub fn accept() -> Backoff {
        Backoff::new(Duration::from_millis(5), Duration::from_secs(1))
    }

    /// Reconnects to the control plane: 200 ms growing to 10 s.
    pub fn reconnect() -> Backoff {
        Backoff::new(Duration::from_millis(200), Duration::from_secs(10))
    }

    /// Retries of requests (GEP-1731 / Envoy): uniform in [0, base * 2^n], capped.
    pub fn retries(base: Duration, max: Duration) -> Backoff {
        Backoff {
            full_jitter: true,
            ..Backoff::new(base, max)
        }
    }

    /// The next wait; each call doubles the next one up to `max`.
    pub fn next_wait(&mut self) -> Duration {
        let current = self.next;
        self.next = (self.next * 2).min(self.max);
        if self.full_jitter {
            current.mul_f64(fastrand::f64())
        } else {
            current + current.mul_f64(fastrand::f64() * 0.5)
        }
    }

    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_wait()).await;
    }

    /// After a success: start from `min` again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_its_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(800));
        let waits: Vec<Duration> = (0..6).map(|_| b.next_wait()).collect();
        for (w, base) in waits.iter().zip([100, 200, 400, 800, 800, 800]) {
            assert!(*w >= ms(base) && *w <= ms(base) * 3 / 2, "{w:?} for {base}");
        }
        b.reset();
        assert!(b.next_wait() <= ms(150));
        let mut r = Backoff::retries(ms(25), ms(100));
        for cap in [25, 50, 100, 100] {
            assert!(r.next_wait() <= ms(cap));
        }
    }
}
