//! `grpc-client` and `ws-client`: streaming clients that check every reply.
use std::{collections::BTreeMap, net::SocketAddr, time::Duration, time::Instant};

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;

use crate::echo::{self, echo_client::EchoClient};

type Client = EchoClient<tonic::transport::Channel>;

pub async fn grpc_client(
    to: SocketAddr,
    count: u32,
    headers: &[String],
    unary_only: bool,
) -> Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{to}"))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .context("gRPC connect")?;
    let mut client = EchoClient::new(channel);
    let start = Instant::now();
    let unary = unary_calls(&mut client, count, headers).await?;
    if unary_only {
        let report = serde_json::json!({
            "unary_ok": unary.ok, "servers": unary.servers, "served_by": unary.served_by,
            "echoed": unary.echoed,
        });
        println!("{report}");
        return Ok(());
    }
    let failed = client
        .unary(msg("fail"))
        .await
        .err()
        .map(|s| (s.code() as i32, s.message().to_owned()));
    let bidi = bidi_stream(&mut client, count).await?;
    println!(
        "{}",
        serde_json::json!({
            "unary_ok": unary.ok,
            "servers": unary.servers,
            "served_by": unary.served_by,
            "echoed": unary.echoed,
            "error_code": failed.as_ref().map(|f| f.0),
            "error_message": failed.map(|f| f.1),
            "bidi_ok": bidi.ok,
            "bidi_server": bidi.server,
            "stream_closed_cleanly": bidi.closed_cleanly,
            "ms": start.elapsed().as_millis() as u64,
        })
    );
    Ok(())
}

fn msg(text: &str) -> echo::Msg {
    echo::Msg {
        text: text.into(),
        server: String::new(),
    }
}

#[derive(Default)]
struct Unary {
    ok: u32,
    servers: BTreeMap<String, u32>,
    /// The `x-served-by` metadata of the last reply.
    served_by: String,
    /// The request's `x-*` metadata as the server saw it (its `echo-x-*` reply
    /// metadata), last reply.
    echoed: BTreeMap<String, String>,
}

async fn unary_calls(client: &mut Client, count: u32, headers: &[String]) -> Result<Unary> {
    let mut out = Unary::default();
    for i in 0..count {
        let text = format!("hello {i}");
        let mut req = tonic::Request::new(msg(&text));
        for h in headers {
            let (k, v) = h.split_once(':').context("--header name:value")?;
            let k: tonic::metadata::MetadataKey<tonic::metadata::Ascii> = k.trim().parse()?;
            req.metadata_mut().append(k, v.trim().parse()?);
        }
        let r = client.unary(req).await.context("unary call")?;
        out.echoed = r
            .metadata()
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => Some((
                    k.as_str().strip_prefix("echo-")?.to_owned(),
                    v.to_str().ok()?.to_owned(),
                )),
                _ => None,
            })
            .collect();
        out.served_by = r
            .metadata()
            .get("x-served-by")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let m = r.into_inner();
        if m.text == text {
            out.ok += 1;
        }
        *out.servers.entry(m.server).or_default() += 1;
    }
    Ok(out)
}

struct Bidi {
    ok: u32,
    server: String,
    /// The server ended the stream (trailers) once the client had.
    closed_cleanly: bool,
}

async fn bidi_stream(client: &mut Client, count: u32) -> Result<Bidi> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let outbound = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut inbound = client
        .bidi(outbound)
        .await
        .context("bidi call")?
        .into_inner();
    let mut ok = 0;
    let mut server = String::new();
    for i in 0..count {
        let text = format!("msg {i}");
        tx.send(msg(&text)).await?;
        // One reply per message, before the next is sent: streaming both ways.
        match inbound.next().await {
            Some(Ok(m)) if m.text == text => {
                ok += 1;
                server = m.server;
            }
            other => anyhow::bail!("bidi reply {i}: {other:?}"),
        }
    }
    drop(tx);
    let closed_cleanly = inbound.next().await.is_none();
    Ok(Bidi {
        ok,
        server,
        closed_cleanly,
    })
}

pub async fn ws_client(to: SocketAddr, count: u32) -> Result<()> {
    let tcp = TcpStream::connect(to).await.context("connect")?;
    let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://{to}/ws"), tcp)
        .await
        .context("WebSocket handshake")?;
    let mut replies = Vec::new();
    for i in 0..count {
        ws.send(tokio_tungstenite::tungstenite::Message::text(format!(
            "m{i}"
        )))
        .await?;
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(m))) => {
                replies.push(m.into_text().map(|t| t.to_string()).unwrap_or_default())
            }
            other => anyhow::bail!("reply {i}: {other:?}"),
        }
    }
    let _ = ws.close(None).await;
    println!(
        "{}",
        serde_json::json!({"status": resp.status().as_u16(), "replies": replies})
    );
    Ok(())
}
