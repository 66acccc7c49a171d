//! `mesh-agent hbone-probe`: one HBONE stream with the certificates given, a few
//! bytes through it, and a JSON line saying what happened.
use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    identity::manager::WorkloadCert,
    tls,
    tunnel::hbone::{io::H2Io, REASON_HEADER},
};
use mesh_model::identity::Identity;

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// HBONE endpoint (pod ip:15008).
    #[arg(long)]
    hbone: SocketAddr,
    /// The tunnelled destination (:authority).
    #[arg(long)]
    authority: SocketAddr,
    /// Client certificate and key (PEM) and the identity they hold.
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    #[arg(long)]
    identity: String,
    /// Trust bundle.
    #[arg(long)]
    root: PathBuf,
    /// Identity the server must prove.
    #[arg(long)]
    expect: String,
    /// Bytes to send and expect back (an echo server behind).
    #[arg(long, default_value = "hello hbone")]
    message: String,
    /// Skip TLS: send plaintext HTTP/2 to the port (must be refused).
    #[arg(long)]
    plaintext: bool,
    /// Pad the CONNECT with a header of this many bytes (limits tests).
    #[arg(long, default_value_t = 0)]
    header_bytes: usize,
}

fn report(v: serde_json::Value) {
    println!("{v}");
}

pub fn run(a: ProbeArgs) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let out = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(15), probe(&a))
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
    });
    match out {
        Ok(Outcome {
            status,
            reason,
            echoed,
            peer_max_streams,
            reply,
        }) => report(serde_json::json!({
            "stage": "http", "status": status, "reason": reason, "echoed": echoed,
            "peer_max_streams": peer_max_streams, "reply": reply,
        })),
        Err(e) => report(serde_json::json!({"stage": "error", "error": e})),
    }
    Ok(())
}

/// What one CONNECT stream got.
struct Outcome {
    status: u16,
    reason: String,
    echoed: bool,
    /// SETTINGS_MAX_CONCURRENT_STREAMS the server advertised.
    peer_max_streams: usize,
    /// The first line of what came back (an HTTP status line when the message
    /// was a request).
    reply: String,
}

async fn probe(a: &ProbeArgs) -> Result<Outcome, String> {
    let tcp = tokio::net::TcpStream::connect(a.hbone)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if a.plaintext {
        let (mut send, conn) = h2::client::handshake(tcp)
            .await
            .map_err(|e| format!("h2: {e}"))?;
        tokio::spawn(conn);
        return connect_stream(&mut send, a).await;
    }
    let id: Identity = a
        .identity
        .parse()
        .map_err(|e: mesh_model::identity::ParseError| e.to_string())?;
    let expect: Identity = a
        .expect
        .parse()
        .map_err(|e: mesh_model::identity::ParseError| e.to_string())?;
    let read =
        |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let cert = WorkloadCert::from_pem(&id, &[read(&a.cert)?], &read(&a.key)?)
        .map_err(|e| e.to_string())?;
    let roots = tls::roots_from_pem(&read(&a.root)?).map_err(|e| e.to_string())?;
    let cfg = tls::client_config(Arc::clone(&cert.certified), expect, roots)
        .map_err(|e| e.to_string())?;
    let tls_stream = tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::IpAddress(a.hbone.ip().into()), tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let (mut send, conn) = h2::client::handshake(tls_stream)
        .await
        .map_err(|e| format!("h2: {e}"))?;
    tokio::spawn(conn);
    connect_stream(&mut send, a).await
}

async fn connect_stream(
    send: &mut h2::client::SendRequest<Bytes>,
    a: &ProbeArgs,
) -> Result<Outcome, String> {
    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(a.authority.to_string());
    if a.header_bytes > 0 {
        req = req.header("x-pad", "p".repeat(a.header_bytes));
    }
    let req = req.body(()).map_err(|e| e.to_string())?;
    let mut s = send.clone().ready().await.map_err(|e| format!("h2: {e}"))?;
    let (resp, stream) = s.send_request(req, false).map_err(|e| format!("h2: {e}"))?;
    let resp = resp.await.map_err(|e| format!("h2: {e}"))?;
    let peer_max_streams = s.current_max_send_streams();
    let status = resp.status().as_u16();
    let reason = resp
        .headers()
        .get(REASON_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let outcome = |echoed, reply: &[u8]| Outcome {
        status,
        reason,
        echoed,
        peer_max_streams,
        reply: String::from_utf8_lossy(reply)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned(),
    };
    if status != 200 {
        return Ok(outcome(false, &[]));
    }
    let mut io = H2Io::new(stream, resp.into_body());
    io.write_all(a.message.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut back = vec![0u8; a.message.len()];
    io.read_exact(&mut back).await.map_err(|e| e.to_string())?;
    Ok(outcome(back == a.message.as_bytes(), &back))
}
