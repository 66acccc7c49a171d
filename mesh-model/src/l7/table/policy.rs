//! Route-side TrafficPolicy: retries, timeouts, faults, rate limits on a rule.
use std::time::Duration;

use crate::model::{self, TrafficPolicy};

use super::{ctx::*, types::*};
use crate::l7::duration;

pub(super) fn retry_of(
    ctx: &Ctx<'_>,
    route: Option<&model::RouteRetry>,
    policy: Option<&model::RetryPolicy>,
) -> Result<Option<Retry>, BuildError> {
    if route.is_none() && policy.is_none() {
        return Ok(None);
    }
    let mut r = Retry {
        attempts: 1,
        backoff: Duration::from_millis(25),
        max_backoff: Duration::from_millis(250),
        budget_percent: 20,
        min_retries: 3,
        ..Retry::default()
    };
    if let Some(p) = policy {
        if let Some(a) = p.attempts {
            r.attempts = a;
        }
        r.codes = p.codes.clone();
        for on in &p.retry_on {
            match on.as_str() {
                "5xx" => r.on_5xx = true,
                "reset" => r.on_reset = true,
                "connect-failure" => r.on_connect_failure = true,
                other => {
                    return Err(ctx.err(format!(
                        "retry.retryOn: {other:?} is not one of 5xx, reset, connect-failure"
                    )))
                }
            }
        }
        if let Some(b) = ctx.duration("retry.backoff", &p.backoff)? {
            r.backoff = b;
        }
        if let Some(b) = ctx.duration("retry.maxBackoff", &p.max_backoff)? {
            r.max_backoff = b;
        }
        r.budget_percent = p.budget_percent.unwrap_or(20);
        r.min_retries = p.min_retries.unwrap_or(3);
        r.allow_non_idempotent = p.allow_non_idempotent;
    }
    if let Some(rr) = route {
        if let Some(a) = rr.attempts {
            r.attempts = a;
        }
        if !rr.codes.is_empty() {
            r.codes = rr.codes.clone();
        }
        if let Some(b) = ctx.duration("retry.backoff", &rr.backoff)? {
            r.backoff = b;
        }
    }
    if r.codes.is_empty() && !r.on_5xx && !r.on_reset && !r.on_connect_failure {
        // GEP-1731: with no codes given, retry what is safe to retry.
        r.on_reset = true;
        r.on_connect_failure = true;
        r.codes = vec![503];
    }
    r.max_backoff = r.max_backoff.max(r.backoff);
    Ok(Some(r))
}

/// Applies route-side policy to a rule.
pub(super) fn apply_policy(
    ctx: &Ctx<'_>,
    rule: &mut RouteRule,
    route_retry: Option<&model::RouteRetry>,
    p: &RoutePolicy,
) -> Result<(), BuildError> {
    rule.retry = retry_of(ctx, route_retry, p.retry.as_ref())?;
    if let Some(t) = &p.timeout {
        if rule.request_timeout.is_none() {
            rule.request_timeout = ctx.duration("timeout.request", &t.request)?;
        }
        rule.idle_timeout = ctx.duration("timeout.idle", &t.idle)?;
    }
    if let Some(f) = &p.fault {
        rule.fault = Some(Fault {
            delay: f
                .delay
                .as_ref()
                .map(|d| {
                    Ok::<_, BuildError>((
                        duration::parse(&d.fixed_delay).map_err(|e| {
                            ctx.err(format!("faultInjection.delay.fixedDelay: {e}"))
                        })?,
                        percentage(ctx, "faultInjection.delay.percentage", d.percentage)?,
                    ))
                })
                .transpose()?,
            abort: f
                .abort
                .as_ref()
                .map(|a| {
                    let status = a.http_status.unwrap_or(503);
                    if !(200..=599).contains(&status) {
                        return Err(ctx.err(format!(
                            "faultInjection.abort.httpStatus: {status} is not an HTTP status"
                        )));
                    }
                    Ok((
                        status,
                        a.grpc_status,
                        percentage(ctx, "faultInjection.abort.percentage", a.percentage)?,
                    ))
                })
                .transpose()?,
        });
    }
    if let Some((key, r)) = &p.rate_limit {
        if r.requests == 0 {
            return Err(ctx.err("rateLimit.requests: must be at least 1".into()));
        }
        let interval = duration::parse(&r.interval)
            .map_err(|e| ctx.err(format!("rateLimit.interval: {e}")))?;
        if interval.is_zero() {
            return Err(ctx.err("rateLimit.interval: must be more than 0".into()));
        }
        let resp = r.response.clone().unwrap_or_default();
        rule.rate_limit = Some(RateLimit {
            key: key.clone(),
            requests: r.requests,
            interval,
            burst: r.burst.unwrap_or(r.requests).max(1),
            per_source: r.per_source,
            status: resp.status_code.unwrap_or(429),
            body: resp.body.unwrap_or_else(|| "rate limited\n".into()),
            headers: resp
                .headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
        });
    }
    Ok(())
}

/// Route-side policies for a route, a rule name and the parent services.
pub(super) fn policies_for(
    policies: &[std::sync::Arc<TrafficPolicy>],
    ns: &str,
    kind: &str,
    route: &str,
    rule: Option<&str>,
) -> RoutePolicy {
    let mut out = RoutePolicy::default();
    // Route-wide first, then the rule's own section.
    let sections = if rule.is_some() {
        vec![None, rule]
    } else {
        vec![None]
    };
    for section in sections {
        for p in policies.iter().filter(|p| p.metadata.namespace() == ns) {
            if p.spec
                .target_refs
                .iter()
                .any(|t| t.kind == kind && t.name == route && t.section_name.as_deref() == section)
            {
                out.merge(p);
            }
        }
    }
    out
}
