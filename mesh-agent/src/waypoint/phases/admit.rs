//! Admit: the local rate limit (`RL`, with `Retry-After`), then injected faults: a
//! delay (which the request timeout covers: `UT` when it would pass the deadline)
//! and an abort (`FI`).
use std::time::Instant;

use http::{header, HeaderValue, StatusCode};
use mesh_model::l7::table::{Fault, RateLimit, RouteRule};

use crate::waypoint::{
    conn::Conn,
    ratelimit,
    reply::{LocalReply, ResponseFlag},
};

fn rate_limit(conn: &Conn, rl: &RateLimit) -> Result<(), LocalReply> {
    if conn.l7.buckets.take(rl, &conn.source_key(), Instant::now()) {
        return Ok(());
    }
    let status = LocalReply::status_or(rl.status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after = HeaderValue::from(ratelimit::retry_after(rl));
    Err(
        LocalReply::new(status, rl.body.clone(), ResponseFlag::RateLimited)
            .header(header::RETRY_AFTER, retry_after)
            .headers(rl.headers.iter().map(|(n, v)| (n, v))),
    )
}

fn timed_out() -> LocalReply {
    LocalReply::new(
        StatusCode::GATEWAY_TIMEOUT,
        "upstream request timeout\n",
        ResponseFlag::UpstreamTimeout,
    )
}

async fn fault(f: &Fault, deadline: Option<tokio::time::Instant>) -> Result<(), LocalReply> {
    if let Some((delay, pct)) = f.delay {
        if fastrand::f64() * 100.0 < pct {
            match deadline {
                Some(end) if tokio::time::Instant::now() + delay >= end => {
                    tokio::time::sleep_until(end).await;
                    return Err(timed_out());
                }
                _ => tokio::time::sleep(delay).await,
            }
        }
    }
    if let Some((status, grpc_code, pct)) = f.abort {
        if fastrand::f64() * 100.0 < pct {
            let status = LocalReply::status_or(status, StatusCode::SERVICE_UNAVAILABLE);
            return Err(LocalReply::new(
                status,
                "fault filter abort\n",
                ResponseFlag::FaultInjected,
            )
            .grpc_code(grpc_code));
        }
    }
    Ok(())
}

pub async fn check(
    conn: &Conn,
    rule: &RouteRule,
    deadline: Option<tokio::time::Instant>,
) -> Result<(), LocalReply> {
    if let Some(rl) = &rule.rate_limit {
        rate_limit(conn, rl)?;
    }
    if let Some(f) = &rule.fault {
        fault(f, deadline).await?;
    }
    Ok(())
}
