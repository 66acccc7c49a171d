//! A captured connection that is refused must look refused to the application: it
//! is reset (RST), not closed cleanly, so a client never mistakes a refusal for an
//! empty answer.
use tokio::net::TcpStream;

pub struct ResetOnDrop(Option<TcpStream>);

impl ResetOnDrop {
    pub fn new(conn: TcpStream) -> Self {
        ResetOnDrop(Some(conn))
    }

    /// Hands the connection on (to be proxied); no reset then.
    pub fn take(mut self) -> TcpStream {
        self.0.take().expect("taken once")
    }
}

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            // SO_LINGER 0: close() sends RST.
            let _ = conn.set_zero_linger();
        }
    }
}
