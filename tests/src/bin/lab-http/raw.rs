//! `raw` and `rapid-reset`: hand-made bytes and frames for the hostile-input tests.
use std::{net::SocketAddr, time::Duration, time::Instant};

use anyhow::{Context, Result};
use hyper::Request;
use tokio::net::TcpStream;

pub async fn raw(to: SocketAddr, send: String, wait_ms: u64) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bytes = send.replace("\\r", "\r").replace("\\n", "\n");
    let mut tcp = TcpStream::connect(to).await.context("connect")?;
    tcp.write_all(bytes.as_bytes()).await?;
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_millis(wait_ms), tcp.read(&mut buf)).await {
            Ok(Ok(0)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => break true,
            Err(_) => break false,
        }
    };
    println!(
        "{}",
        serde_json::json!({
            "response": String::from_utf8_lossy(&got),
            "closed": closed,
            "ms": start.elapsed().as_millis() as u64,
        })
    );
    Ok(())
}

pub async fn rapid_reset(to: SocketAddr, streams: u32) -> Result<()> {
    let tcp = TcpStream::connect(to).await.context("connect")?;
    let (client, conn) = h2::client::handshake(tcp).await.context("h2 handshake")?;
    let driver = tokio::spawn(conn);
    let mut client = client;
    let mut sent = 0;
    let mut refused = None;
    for i in 0..streams {
        match client.clone().ready().await {
            Ok(c) => client = c,
            Err(e) => {
                refused = Some(format!("after {i} streams: {e}"));
                break;
            }
        }
        let req = Request::builder()
            .uri(format!("http://{to}/delay/1000"))
            .body(())
            .expect("request");
        match client.send_request(req, false) {
            Ok((resp, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                drop(resp);
                sent += 1;
            }
            Err(e) => {
                refused = Some(format!("after {i} streams: {e}"));
                break;
            }
        }
    }
    // The server may end the connection (GOAWAY): that is the defence.
    let ended = tokio::time::timeout(Duration::from_secs(5), driver).await;
    println!(
        "{}",
        serde_json::json!({
            "reset_streams": sent,
            "refused": refused,
            "connection_ended": ended.is_ok(),
        })
    );
    Ok(())
}
