//! Backend state that outlives config changes: requests in flight, outlier
//! ejections, retry budgets; and the choice of an endpoint (round robin or least
//! request by power of two choices, skipping ejected endpoints).
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU32, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use mesh_model::l7::table::BackendPolicy;
use mesh_model::model::LoadBalancerType;

#[derive(Debug, Default)]
pub struct EndpointStats {
    pub inflight: AtomicU32,
    /// Upstream connections open (circuit breaker maxConnections).
    pub connections: AtomicU32,
    consecutive_5xx: AtomicU32,
    ejections: AtomicU32,
    ejected_until: Mutex<Option<Instant>>,
}

impl EndpointStats {
    pub fn ejected(&self, now: Instant) -> bool {
        let e = self.ejected_until.lock().unwrap_or_else(|p| p.into_inner());
        e.is_some_and(|t| t > now)
    }
}

#[derive(Debug, Default)]
pub struct BackendStats {
    pub inflight: AtomicU32,
    pub retries: AtomicU32,
    pub pending: AtomicU32,
    next: AtomicUsize,
}

/// Decrements a counter when dropped.
pub struct Held(Arc<EndpointStats>, Option<Arc<BackendStats>>, Which);

#[derive(Clone, Copy)]
pub enum Which {
    Request,
    Retry,
    Pending,
}

impl Drop for Held {
    fn drop(&mut self) {
        match self.2 {
            Which::Request => {
                self.0.inflight.fetch_sub(1, Ordering::Relaxed);
                if let Some(b) = &self.1 {
                    b.inflight.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Which::Retry => {
                if let Some(b) = &self.1 {
                    b.retries.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Which::Pending => {
                if let Some(b) = &self.1 {
                    b.pending.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Endpoint statistics kept before idle ones are pruned.
pub const PRUNE_ENDPOINTS: usize = 4096;

#[derive(Debug, Default)]
pub struct Backends {
    endpoints: Mutex<HashMap<SocketAddr, Arc<EndpointStats>>>,
    backends: Mutex<HashMap<String, Arc<BackendStats>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    Parallel,
    Pending,
}

impl Backends {
    /// The statistics of one endpoint. Endpoints come and go with pods: past
    /// `PRUNE_ENDPOINTS` entries, those nobody holds and that are not ejected go.
    pub fn endpoint(&self, addr: SocketAddr) -> Arc<EndpointStats> {
        let mut m = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= PRUNE_ENDPOINTS && !m.contains_key(&addr) {
            let now = Instant::now();
            m.retain(|_, s| Arc::strong_count(s) > 1 || s.ejected(now));
        }
        m.entry(addr).or_default().clone()
    }

    pub fn endpoints_len(&self) -> usize {
        self.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn backend(&self, service: &str) -> Arc<BackendStats> {
        let mut m = self.backends.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = m.get(service) {
            return b.clone();
        }
        m.entry(service.to_owned()).or_default().clone()
    }

    /// Picks an endpoint, avoiding `avoid` (the one a retry follows) when others exist.
    pub fn pick(
        &self,
        service: &BackendStats,
        endpoints: &[SocketAddr],
        policy: &BackendPolicy,
        avoid: Option<SocketAddr>,
        now: Instant,
    ) -> Option<SocketAddr> {
        let stats: Vec<(SocketAddr, Arc<EndpointStats>)> =
            endpoints.iter().map(|a| (*a, self.endpoint(*a))).collect();
        let healthy: Vec<&(SocketAddr, Arc<EndpointStats>)> =
            stats.iter().filter(|(_, s)| !s.ejected(now)).collect();
        // All ejected: use them all rather than fail (Envoy's panic threshold).
        let mut pool: Vec<&(SocketAddr, Arc<EndpointStats>)> = if healthy.is_empty() {
            stats.iter().collect()
        } else {
            healthy
        };
        if pool.len() > 1 {
            if let Some(a) = avoid {
                pool.retain(|(x, _)| *x != a);
            }
        }
        if pool.is_empty() {
            return None;
        }
        let i = match policy.lb {
            LoadBalancerType::RoundRobin => {
                service.next.fetch_add(1, Ordering::Relaxed) % pool.len()
            }
            LoadBalancerType::LeastRequest => {
                let a = fastrand::usize(..pool.len());
                let b = fastrand::usize(..pool.len());
                let load = |i: usize| pool[i].1.inflight.load(Ordering::Relaxed);
                if load(b) < load(a) {
                    b
                } else {
                    a
                }
            }
        };
        Some(pool[i].0)
    }

    /// Counts a request to `addr` against the circuit breaker; None when it is open.
    pub fn admit(
        &self,
        service: &Arc<BackendStats>,
        addr: SocketAddr,
        policy: &BackendPolicy,
    ) -> Result<Held, Overflow> {
        if let Some(max) = policy.max_parallel {
            if service.inflight.load(Ordering::Relaxed) >= max {
                return Err(Overflow::Parallel);
            }
        }
        let ep = self.endpoint(addr);
        ep.inflight.fetch_add(1, Ordering::Relaxed);
        service.inflight.fetch_add(1, Ordering::Relaxed);
        Ok(Held(ep, Some(service.clone()), Which::Request))
    }

    /// A request waiting for an upstream connection; None over maxPendingRequests.
    pub fn pending(
        &self,
        service: &Arc<BackendStats>,
        addr: SocketAddr,
        policy: &BackendPolicy,
    ) -> Result<Held, Overflow> {
        let now = service.pending.fetch_add(1, Ordering::Relaxed) + 1;
        let held = Held(self.endpoint(addr), Some(service.clone()), Which::Pending);
        match policy.max_pending {
            Some(max) if now > max => Err(Overflow::Pending),
            _ => Ok(held),
        }
    }

    /// Takes a place in the retry budget: retries in flight may be at most
    /// `percent` of requests in flight, or `min` whatever the load.
    pub fn retry_budget(
        &self,
        service: &Arc<BackendStats>,
        addr: SocketAddr,
        percent: u32,
        min: u32,
    ) -> Option<Held> {
        let inflight = service.inflight.load(Ordering::Relaxed);
        let allowed = (u64::from(inflight) * u64::from(percent) / 100).max(u64::from(min));
        let now = service.retries.fetch_add(1, Ordering::Relaxed) + 1;
        let held = Held(self.endpoint(addr), Some(service.clone()), Which::Retry);
        (u64::from(now) <= allowed).then_some(held)
    }

    /// Records an attempt's outcome for outlier detection; true if it ejected `addr`.
    pub fn record(
        &self,
        addr: SocketAddr,
        failed: bool,
        endpoints: &[SocketAddr],
        policy: &BackendPolicy,
        now: Instant,
    ) -> bool {
        let Some((consecutive, base, max_percent)) = policy.outlier else {
            return false;
        };
        let ep = self.endpoint(addr);
        if !failed {
            ep.consecutive_5xx.store(0, Ordering::Relaxed);
            return false;
        }
        let n = ep.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        if n < consecutive {
            return false;
        }
        let ejected = endpoints
            .iter()
            .filter(|a| **a != addr && self.endpoint(**a).ejected(now))
            .count();
        // Ejecting this one must keep the ejected share within maxEjectionPercent.
        if endpoints.is_empty() || (ejected + 1) * 100 > endpoints.len() * max_percent as usize {
            return false;
        }
        ep.consecutive_5xx.store(0, Ordering::Relaxed);
        let times = ep.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let mut until = ep.ejected_until.lock().unwrap_or_else(|p| p.into_inner());
        *until = Some(now + base * times.min(10));
        tracing::info!(endpoint = %addr, ejection = times, "outlier detection: endpoint ejected for {:?} after {n} consecutive failures", base * times.min(10));
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn addrs(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 80)))
            .collect()
    }

    #[test]
    fn round_robin_skips_ejected_and_avoided() {
        let b = Backends::default();
        let eps = addrs(3);
        let policy = BackendPolicy {
            outlier: Some((2, Duration::from_secs(30), 50)),
            ..BackendPolicy::default()
        };
        let now = Instant::now();
        assert!(!b.record(eps[0], true, &eps, &policy, now));
        assert!(
            b.record(eps[0], true, &eps, &policy, now),
            "second consecutive 5xx ejects"
        );
        let svc = b.backend("ns/s");
        for _ in 0..6 {
            let p = b.pick(&svc, &eps, &policy, None, now).expect("pick");
            assert_ne!(p, eps[0], "ejected endpoint is skipped");
        }
        for _ in 0..4 {
            let p = b
                .pick(&svc, &eps, &policy, Some(eps[1]), now)
                .expect("pick");
            assert_eq!(p, eps[2], "retry avoids the endpoint that failed");
        }
        let later = now + Duration::from_secs(31);
        let seen: std::collections::HashSet<_> = (0..6)
            .filter_map(|_| b.pick(&svc, &eps, &policy, None, later))
            .collect();
        assert!(seen.contains(&eps[0]), "restored after the ejection time");
    }

    #[test]
    fn ejection_respects_max_percent_and_success_resets() {
        let b = Backends::default();
        let eps = addrs(2);
        let policy = BackendPolicy {
            outlier: Some((1, Duration::from_secs(30), 50)),
            ..BackendPolicy::default()
        };
        let now = Instant::now();
        assert!(b.record(eps[0], true, &eps, &policy, now));
        assert!(
            !b.record(eps[1], true, &eps, &policy, now),
            "a second ejection would exceed 50%"
        );
        let p3 = BackendPolicy {
            outlier: Some((2, Duration::from_secs(30), 100)),
            ..BackendPolicy::default()
        };
        let eps3 = addrs(3);
        let b = Backends::default();
        assert!(!b.record(eps3[2], true, &eps3, &p3, now));
        assert!(
            !b.record(eps3[2], false, &eps3, &p3, now),
            "a success resets the count"
        );
        assert!(!b.record(eps3[2], true, &eps3, &p3, now));
    }

    #[test]
    fn least_request_prefers_idle_endpoint() {
        let b = Backends::default();
        let eps = addrs(2);
        let policy = BackendPolicy {
            lb: LoadBalancerType::LeastRequest,
            ..BackendPolicy::default()
        };
        b.endpoint(eps[0]).inflight.store(100, Ordering::Relaxed);
        let svc = b.backend("ns/s");
        let now = Instant::now();
        let busy = (0..200)
            .filter(|_| b.pick(&svc, &eps, &policy, None, now) == Some(eps[0]))
            .count();
        // Two choices: the busy one wins only when both draws pick it (~1/4).
        assert!(busy < 100, "busy endpoint picked {busy} of 200 times");
    }

    #[test]
    fn circuit_breaker_and_budget() {
        let b = Backends::default();
        let eps = addrs(1);
        let policy = BackendPolicy {
            max_parallel: Some(2),
            max_pending: Some(1),
            ..BackendPolicy::default()
        };
        let svc = b.backend("ns/s");
        let h1 = b.admit(&svc, eps[0], &policy).expect("first");
        let _h2 = b.admit(&svc, eps[0], &policy).expect("second");
        assert_eq!(
            b.admit(&svc, eps[0], &policy).err(),
            Some(Overflow::Parallel)
        );
        drop(h1);
        assert!(b.admit(&svc, eps[0], &policy).is_ok(), "a place freed");
        let _p = b.pending(&svc, eps[0], &policy).expect("pending");
        assert!(b.pending(&svc, eps[0], &policy).is_err());
        // Budget: min 1 retry whatever the load.
        let r1 = b.retry_budget(&svc, eps[0], 0, 1);
        assert!(r1.is_some());
        assert!(b.retry_budget(&svc, eps[0], 0, 1).is_none(), "budget spent");
        drop(r1);
        assert!(b.retry_budget(&svc, eps[0], 0, 1).is_some(), "budget back");
    }

    #[test]
    fn endpoint_statistics_nobody_holds_are_pruned_past_the_cap() {
        let b = Backends::default();
        let held = b.endpoint("10.0.0.1:80".parse().expect("addr"));
        for i in 0..PRUNE_ENDPOINTS as u32 {
            let ip = std::net::Ipv4Addr::from(0x0a01_0000 + i);
            let _ = b.endpoint(SocketAddr::new(ip.into(), 80));
        }
        assert!(
            b.endpoints_len() <= PRUNE_ENDPOINTS,
            "{}",
            b.endpoints_len()
        );
        assert!(
            Arc::ptr_eq(&held, &b.endpoint("10.0.0.1:80".parse().expect("addr"))),
            "held stays"
        );
    }
}
