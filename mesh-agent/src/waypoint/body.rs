//! Bodies with a clock. The response body on its way to the client (`Tracked`):
//! counts bytes, cuts a stream that stays idle past the route's idle timeout, and
//! runs the log phase when it ends. The request body on its way upstream
//! (`IdleBody`): ends when the client stops sending for `REQUEST_BODY_IDLE`.
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

/// A request body that must keep moving: no frame for `REQUEST_BODY_IDLE` ends it
/// with an error (Envoy's `stream_idle_timeout` default), so a client that stops
/// half-way through a body cannot hold an upstream connection for ever.
pub struct IdleBody<B> {
    inner: B,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
}

/// How long a request body may send nothing.
pub const REQUEST_BODY_IDLE: Duration = Duration::from_secs(300);

impl<B> IdleBody<B> {
    pub fn new(inner: B, idle: Duration) -> IdleBody<B> {
        IdleBody {
            inner,
            idle,
            sleep: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(r)) => {
                let idle = this.idle;
                this.sleep
                    .as_mut()
                    .reset(tokio::time::Instant::now() + idle);
                Poll::Ready(Some(r.map_err(Into::into)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                    "the request body sent nothing for {:?}",
                    this.idle
                )
                .into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_moving_ends_in_an_error() {
        // One frame, then silence.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        tx.send(Ok(Frame::data(Bytes::from_static(b"half"))))
            .await
            .expect("send");
        let stream = tokio_stream_shim(rx);
        let mut body = IdleBody::new(StreamBody::new(stream), Duration::from_secs(300));
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(
            first.into_data().expect("data"),
            Bytes::from_static(b"half")
        );
        let started = tokio::time::Instant::now();
        let e = body.frame().await.expect("an end").expect_err("idle");
        assert!(e.to_string().contains("sent nothing"), "{e}");
        assert!(
            started.elapsed() >= Duration::from_secs(300),
            "ended by the timer"
        );
        drop(tx);
    }

    /// An mpsc receiver as a Stream (no tokio-stream dependency for one test).
    fn tokio_stream_shim<T>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Unpin {
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
