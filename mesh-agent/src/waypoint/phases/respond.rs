//! Respond: the route's idle timeout for the response stream, an accepted upgrade
//! (101) spliced both ways, and the response header modifiers.
use std::time::Duration;

use hyper::Response;
use hyper_util::rt::TokioIo;
use mesh_model::{l7::table::RouteRule, model::HeaderModifier};

use super::forward::Sent;
use crate::waypoint::{filters, reply::DownBody};

/// The idle timeout a route set, carried in the response extensions to the body.
#[derive(Clone, Copy)]
pub struct IdleTimeout(pub Duration);

/// Splices the client and the upstream once both sides have upgraded.
fn splice_upgrade(resp: &mut Response<DownBody>, down: hyper::upgrade::OnUpgrade) {
    let up = hyper::upgrade::on(resp);
    tokio::spawn(async move {
        match tokio::try_join!(down, up) {
            Ok((d, u)) => {
                let (mut d, mut u) = (TokioIo::new(d), TokioIo::new(u));
                let _ = tokio::io::copy_bidirectional(&mut d, &mut u).await;
            }
            Err(e) => tracing::debug!("upgrade failed: {e}"),
        }
    });
}

pub fn finish(sent: Sent, rule: &RouteRule, headers: &[HeaderModifier]) -> Response<DownBody> {
    let mut resp = sent.response;
    if let Some(d) = rule.idle_timeout {
        resp.extensions_mut().insert(IdleTimeout(d));
    }
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        if let Some(down) = sent.on_upgrade {
            splice_upgrade(&mut resp, down);
        }
    }
    for m in headers {
        filters::modify_headers(resp.headers_mut(), m);
    }
    resp
}
