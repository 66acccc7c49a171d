//! What the waypoint answers itself: a `LocalReply` (status, body, headers, and the
//! response flag that says why), in gRPC form for gRPC callers; and the flags, as
//! Envoy names them, for the access log and metrics.
use std::{borrow::Cow, convert::Infallible};

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::upstream::BoxError;

pub type DownBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// Why a request ended as it did (Envoy's response flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseFlag {
    #[default]
    None,
    /// No route matched (NR).
    NoRoute,
    /// No healthy endpoint (UH).
    NoHealthyUpstream,
    /// A circuit breaker refused (UO).
    UpstreamOverflow,
    /// Connecting upstream failed (UF).
    UpstreamConnectFailure,
    /// The upstream reset the request (UR).
    UpstreamReset,
    /// The request or upstream timed out (UT).
    UpstreamTimeout,
    /// A retry was wanted but attempts or budget were spent (URX).
    UpstreamRetryLimitExceeded,
    /// The stream was idle past the route's idle timeout (SI).
    StreamIdleTimeout,
    /// The local rate limit refused (RL).
    RateLimited,
    /// An injected fault answered (FI).
    FaultInjected,
    /// AuthorizationPolicy denied (AZ).
    Unauthorized,
    /// The request's JWT did not validate (UAEX).
    Unauthenticated,
    /// A DirectResponse answered (DR).
    DirectResponse,
    /// The client's request was malformed (DPE).
    DownstreamProtocolError,
    /// The route or its backend is misconfigured (NC).
    NoClusterFound,
    /// The client went away or its body failed (DC).
    DownstreamConnectionTermination,
}

impl ResponseFlag {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFlag::None => "-",
            ResponseFlag::NoRoute => "NR",
            ResponseFlag::NoHealthyUpstream => "UH",
            ResponseFlag::UpstreamOverflow => "UO",
            ResponseFlag::UpstreamConnectFailure => "UF",
            ResponseFlag::UpstreamReset => "UR",
            ResponseFlag::UpstreamTimeout => "UT",
            ResponseFlag::UpstreamRetryLimitExceeded => "URX",
            ResponseFlag::StreamIdleTimeout => "SI",
            ResponseFlag::RateLimited => "RL",
            ResponseFlag::FaultInjected => "FI",
            ResponseFlag::Unauthorized => "AZ",
            ResponseFlag::Unauthenticated => "UAEX",
            ResponseFlag::DirectResponse => "DR",
            ResponseFlag::DownstreamProtocolError => "DPE",
            ResponseFlag::NoClusterFound => "NC",
            ResponseFlag::DownstreamConnectionTermination => "DC",
        }
    }
}

/// A response the waypoint makes itself.
#[derive(Debug)]
pub struct LocalReply {
    pub status: StatusCode,
    pub body: Cow<'static, str>,
    pub flag: ResponseFlag,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// For gRPC callers: this status instead of the one mapped from `status`.
    pub grpc_code: Option<u32>,
    /// Always plain HTTP, also to gRPC callers (redirects, DirectResponse).
    pub http_only: bool,
}

pub fn full(b: impl Into<Bytes>) -> DownBody {
    Full::new(b.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

/// gRPC status for a locally generated HTTP status (as Envoy maps them).
fn grpc_status(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    }
}

impl LocalReply {
    pub fn new(status: StatusCode, body: impl Into<Cow<'static, str>>, flag: ResponseFlag) -> Self {
        LocalReply {
            status,
            body: body.into(),
            flag,
            headers: Vec::new(),
            grpc_code: None,
            http_only: false,
        }
    }

    /// A status given in config (DirectResponse, rate limit), or `fallback`.
    pub fn status_or(code: u16, fallback: StatusCode) -> StatusCode {
        StatusCode::from_u16(code).unwrap_or(fallback)
    }

    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Headers from config; names or values that are not valid are left out.
    pub fn headers<'a>(
        mut self,
        pairs: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Self {
        for (n, v) in pairs {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(n.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                self.headers.push((n, v));
            }
        }
        self
    }

    pub fn grpc_code(mut self, code: Option<u32>) -> Self {
        self.grpc_code = code;
        self
    }

    pub fn http_only(mut self) -> Self {
        self.http_only = true;
        self
    }

    /// The response; gRPC callers get the trailers-only form with `grpc-status`.
    pub fn into_response(self, grpc: bool) -> Response<DownBody> {
        let mut r = if grpc && !self.http_only {
            let code = self.grpc_code.unwrap_or_else(|| grpc_status(self.status));
            let mut r = Response::new(full(Bytes::new()));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", HeaderValue::from(code));
            if let Ok(v) = HeaderValue::from_str(self.body.trim()) {
                h.insert("grpc-message", v);
            }
            r
        } else {
            let mut r = Response::new(full(self.body.into_owned()));
            *r.status_mut() = self.status;
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        };
        for (n, v) in self.headers {
            r.headers_mut().insert(n, v);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_replies_in_http_and_grpc_form() {
        let denied = || {
            LocalReply::new(
                StatusCode::FORBIDDEN,
                "access denied\n",
                ResponseFlag::Unauthorized,
            )
        };
        let http = denied().into_response(false);
        assert_eq!(http.status(), StatusCode::FORBIDDEN);
        let grpc = denied().into_response(true);
        assert_eq!(
            grpc.status(),
            StatusCode::OK,
            "gRPC errors travel in grpc-status"
        );
        assert_eq!(grpc.headers()["grpc-status"], "7");
        assert_eq!(grpc.headers()["grpc-message"], "access denied");
        let aborted = LocalReply::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "x",
            ResponseFlag::FaultInjected,
        )
        .grpc_code(Some(14))
        .into_response(true);
        assert_eq!(aborted.headers()["grpc-status"], "14");
        let redirect = LocalReply::new(StatusCode::FOUND, "", ResponseFlag::None)
            .http_only()
            .header(header::LOCATION, HeaderValue::from_static("/new"))
            .into_response(true);
        assert_eq!(
            (redirect.status(), &redirect.headers()[header::LOCATION]),
            (StatusCode::FOUND, &HeaderValue::from_static("/new"))
        );
        let flags: Vec<&str> = [
            ResponseFlag::None,
            ResponseFlag::NoRoute,
            ResponseFlag::UpstreamRetryLimitExceeded,
        ]
        .map(ResponseFlag::as_str)
        .to_vec();
        assert_eq!(flags, ["-", "NR", "URX"]);
    }
}
