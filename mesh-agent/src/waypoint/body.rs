//! The response body on its way to the client: counts bytes, cuts a stream that
//! stays idle past the route's idle timeout, and runs the log phase when it ends.
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use super::{
    log::Finish,
    reply::{DownBody, ResponseFlag},
    upstream::BoxError,
};

pub struct Tracked {
    inner: DownBody,
    bytes: u64,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    finish: Option<Finish>,
    grpc_status: Option<String>,
}

impl Tracked {
    pub fn new(inner: DownBody, idle: Option<Duration>, finish: Finish) -> Tracked {
        Tracked {
            inner,
            bytes: 0,
            idle: idle.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
            finish: Some(finish),
            grpc_status: None,
        }
    }

    fn done(&mut self, cut: Option<ResponseFlag>) {
        if let Some(f) = self.finish.take() {
            f.emit(self.bytes, self.grpc_status.take(), cut);
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                }
                if let Some(t) = frame.trailers_ref() {
                    this.grpc_status = t
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                }
                if let Some((d, sleep)) = &mut this.idle {
                    sleep.as_mut().reset(tokio::time::Instant::now() + *d);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done(Some(ResponseFlag::UpstreamReset));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.done(None);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let Some((_, sleep)) = &mut this.idle {
                    if sleep.as_mut().poll(cx).is_ready() {
                        this.done(Some(ResponseFlag::StreamIdleTimeout));
                        return Poll::Ready(Some(Err("stream idle timeout".into())));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // Ended before its last frame: the client went away.
        let flag = if self.inner.is_end_stream() {
            None
        } else {
            Some(ResponseFlag::DownstreamConnectionTermination)
        };
        self.done(flag);
    }
}
