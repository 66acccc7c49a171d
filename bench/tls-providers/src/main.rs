//! rustls's crypto providers (ring, which the mesh uses, and aws-lc-rs, rustls's
//! default) moving bytes through an in-memory TLS 1.3 client/server pair, one
//! thread, no sockets: the CPU seconds per GB to seal (sending agent) and to open
//! (receiving agent), per cipher suite and record size. Prints one JSON document.
use std::{
    io::{ErrorKind, Read, Write},
    sync::Arc,
};

use rustls::{
    crypto::{aws_lc_rs, ring, CryptoProvider},
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName},
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
    SupportedCipherSuite,
};
use serde_json::{json, Value};

const GB: usize = 1_000_000_000;

/// This thread's CPU time in seconds.
fn cpu() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec out-pointer for clock_gettime.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

type Pair = (Connection, Connection);

fn pair(provider: &CryptoProvider, suite: SupportedCipherSuite, fragment: usize) -> Pair {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["bench.local".into()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let der = CertificateDer::from(cert.der().to_vec());
    let only = Arc::new(CryptoProvider {
        cipher_suites: vec![suite],
        ..provider.clone()
    });
    let mut server = ServerConfig::builder_with_provider(only.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_no_client_auth()
        .with_single_cert(
            vec![der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    server.max_fragment_size = Some(fragment);
    let mut roots = RootCertStore::empty();
    roots.add(der).expect("root");
    let mut client = ClientConfig::builder_with_provider(only)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.max_fragment_size = Some(fragment);
    let name = ServerName::try_from("bench.local").expect("name");
    let mut c = Connection::from(ClientConnection::new(Arc::new(client), name).expect("client"));
    let mut s = Connection::from(ServerConnection::new(Arc::new(server)).expect("server"));
    while c.is_handshaking() || s.is_handshaking() {
        shuttle(&mut c, &mut s);
        shuttle(&mut s, &mut c);
    }
    (c, s)
}

/// Everything `from` wants to write, read and processed by `to`.
fn shuttle(from: &mut Connection, to: &mut Connection) {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).expect("write_tls");
    }
    let mut rd = &wire[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).expect("read_tls");
        to.process_new_packets().expect("process");
    }
}

/// Moves `total` bytes client -> server in `write`-byte application writes:
/// (seal CPU s, open CPU s).
fn run(pair: &mut Pair, total: usize, write: usize) -> (f64, f64) {
    let (c, s) = pair;
    let chunk = vec![0x5a_u8; write];
    let mut sink = vec![0_u8; 256 * 1024];
    let mut wire = Vec::with_capacity(write + 4096);
    let (mut seal, mut open, mut moved, mut got) = (0.0, 0.0, 0, 0);
    while moved < total {
        let t0 = cpu();
        c.writer().write_all(&chunk).expect("plaintext in");
        wire.clear();
        while c.wants_write() {
            c.write_tls(&mut wire).expect("records out");
        }
        let t1 = cpu();
        let mut rd = &wire[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).expect("records in");
            s.process_new_packets().expect("open");
            loop {
                match s.reader().read(&mut sink) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("plaintext out: {e}"),
                }
            }
        }
        let t2 = cpu();
        seal += t1 - t0;
        open += t2 - t1;
        moved += write;
    }
    assert_eq!(got, moved, "bytes lost");
    (seal, open)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let total = if quick { GB / 4 } else { GB };
    let providers = [
        ("ring", ring::default_provider()),
        ("aws-lc-rs", aws_lc_rs::default_provider()),
    ];
    let mut rows: Vec<Value> = Vec::new();
    for (name, provider) in &providers {
        for suite in provider
            .cipher_suites
            .iter()
            .filter(|s| s.tls13().is_some())
        {
            for fragment in [4096, 16384] {
                let mut p = pair(provider, *suite, fragment);
                let (seal, open) = run(&mut p, total, 64 * 1024);
                let gb = total as f64 / GB as f64;
                rows.push(json!({
                    "provider": name,
                    "suite": format!("{:?}", suite.suite()),
                    "record_bytes": fragment,
                    "seal_cpu_s_per_gb": seal / gb,
                    "open_cpu_s_per_gb": open / gb,
                    "both_cpu_s_per_gb": (seal + open) / gb,
                }));
            }
        }
    }
    println!(
        "{}",
        json!({"bytes_per_row": total, "write_bytes": 65536, "rows": rows})
    );
}
