//! Zero trust at L4: SPIFFE identities, the CA, HBONE mTLS and L4 authorization,
//! in the lab with a separate CA process.
mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::{assert_intact, two_node_lab, two_node_lab_with, DENY_CLIENT};
use ferrymesh_tests::{
    eventually,
    lab::{agent_binary, control_binary},
    Lab,
};

fn agent() -> String {
    agent_binary()
        .expect("mesh-agent binary")
        .display()
        .to_string()
}

#[test]
fn bytes_between_nodes_are_tls_only_on_the_fabric() {
    let lab = two_node_lab();
    let _server = lab.server("server", &[8080]).expect("server");
    let pcap = lab.dir.join("fabric.pcap");
    let mut dump = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.fabric_netns()))
        .args(["--", "tcpdump", "-i", "br0", "-U", "-s", "0", "-w"])
        .arg(&pcap)
        .arg("tcp")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tcpdump (installed by cargo xtask)");
    // tcpdump writes the file header once it captures.
    eventually(
        Duration::from_secs(10),
        "tcpdump to start capturing",
        || match std::fs::metadata(&pcap).map(|m| m.len()).unwrap_or(0) {
            n if n >= 24 => Ok(()),
            n => Err(format!("{n} bytes")),
        },
    )
    .expect("tcpdump");
    let to = lab.pod("server").addr4(8080).to_string();
    let secret = "FERRYMESH-SECRET-MARKER";
    let r = lab
        .run_client(
            "client",
            &[
                "connect", "--to", &to, "--bytes", "262144", "--text", secret,
            ],
        )
        .unwrap();
    assert_intact(&r, 262144);
    // Control: a pod outside the mesh sends its marker in plaintext, and the capture sees it.
    let control = "FERRYMESH-CONTROL-MARKER";
    let r = lab
        .run_client(
            "outsider",
            &[
                "connect", "--to", &to, "--bytes", "65536", "--text", control,
            ],
        )
        .unwrap();
    assert_intact(&r, 65536);
    let has_control = || {
        let bytes = std::fs::read(&pcap).unwrap_or_default();
        bytes
            .windows(control.len())
            .any(|w| w == control.as_bytes())
    };
    // The capture has the control marker (then it has the meshed bytes too).
    eventually(
        Duration::from_secs(10),
        "the plaintext marker in the capture",
        || has_control().then_some(()).ok_or("not yet"),
    )
    .expect("control marker captured");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dump.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = dump.wait();
    let bytes = std::fs::read(&pcap).expect("capture file");
    let has = |m: &str| bytes.windows(m.len()).any(|w| w == m.as_bytes());
    assert!(
        has(control),
        "the capture did not see the plaintext control marker"
    );
    assert!(
        !has(secret),
        "the meshed client's plaintext appeared on the fabric"
    );
    let a = lab.stats("a").unwrap();
    assert!(
        a["workloads"]["shop/client"]["outbound_hbone"]
            .as_u64()
            .unwrap()
            >= 1,
        "{a:#}"
    );
    // The destination agent saw the client's identity.
    let log = lab.agent_log("b");
    assert!(
        log.contains(r#""src.identity":"spiffe://cluster.local/ns/shop/sa/client""#)
            && log.contains(r#""dst.identity":"spiffe://cluster.local/ns/shop/sa/server""#),
        "no access log with both identities on b:\n{log}"
    );
    // And Prometheus counters with the usual labels, on :15020.
    let m = lab.metrics("b").unwrap();
    assert!(
        m.lines()
            .any(|l| l.starts_with("istio_tcp_connections_closed_total{")
                && l.contains(r#"reporter="destination""#)
                && l.contains(r#"connection_security_policy="mutual_tls""#)
                && l.contains(r#"source_workload="client""#)
                && l.contains(r#"destination_workload="server""#)
                && l.contains(r#"source_principal="spiffe://cluster.local/ns/shop/sa/client""#)
                && l.contains(
                    r#"destination_principal="spiffe://cluster.local/ns/shop/sa/server""#
                )),
        "{m}"
    );
    assert!(m.contains("istio_tcp_sent_bytes_total{"), "{m}");
    assert!(m.contains("istio_tcp_connections_opened_total{"), "{m}");
}

struct Probe<'a> {
    name: &'a str,
    cert: &'a Path,
    key: &'a Path,
    identity: &'a str,
    root: &'a Path,
    expect: &'a str,
    plaintext: bool,
    /// Pad the CONNECT with a header this large.
    header_bytes: usize,
    /// Sent inside the stream instead of the default echo message.
    message: Option<&'a str>,
}

fn probe(lab: &Lab, p: &Probe<'_>) -> serde_json::Value {
    let server = lab.pod("server");
    let hbone = format!("{}:15008", server.ip4);
    let authority = server.addr4(8080).to_string();
    let mut args = vec![
        agent(),
        "hbone-probe".into(),
        "--hbone".into(),
        hbone,
        "--authority".into(),
        authority,
        "--cert".into(),
        p.cert.display().to_string(),
        "--key".into(),
        p.key.display().to_string(),
        "--identity".into(),
        p.identity.into(),
        "--root".into(),
        p.root.display().to_string(),
        "--expect".into(),
        p.expect.into(),
    ];
    if p.plaintext {
        args.push("--plaintext".into());
    }
    args.extend(["--header-bytes".into(), p.header_bytes.to_string()]);
    if let Some(m) = p.message {
        args.extend(["--message".into(), m.to_owned()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = lab
        .exec_in("client", &args)
        .unwrap_or_else(|e| panic!("{}: {e}", p.name));
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{}: {e}: {out}", p.name))
}

#[test]
fn hbone_refuses_wrong_san_foreign_ca_expired_and_plaintext_clients() {
    let lab = two_node_lab();
    let _server = lab.server("server", &[8080]).expect("server");
    let ca = lab.ca_dir();
    let root = ca.join("root-cert.pem");
    let dir = lab.dir.clone();
    let client_id = "spiffe://cluster.local/ns/shop/sa/client";
    let server_id = "spiffe://cluster.local/ns/shop/sa/server";
    let issue = |ca_dir: &Path, name: &str, extra: &[&str]| {
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}-key.pem")),
        );
        let mut cmd = Command::new(control_binary().expect("mesh-control binary"));
        cmd.args(["ca", "issue", "--dir"])
            .arg(ca_dir)
            .args(["--identity", client_id, "--cert-out"])
            .arg(&cert)
            .arg("--key-out")
            .arg(&key)
            .args(extra);
        assert!(cmd.status().unwrap().success(), "issue {name}");
        (cert, key)
    };
    let (good_cert, good_key) = issue(&ca, "good", &[]);
    let (old_cert, old_key) = issue(&ca, "expired", &["--expired"]);
    let other_ca = dir.join("other-ca");
    let (foreign_cert, foreign_key) = issue(&other_ca, "foreign", &[]);

    let ok = probe(
        &lab,
        &Probe {
            name: "valid",
            cert: &good_cert,
            key: &good_key,
            identity: client_id,
            root: &root,
            expect: server_id,
            plaintext: false,
            header_bytes: 0,
            message: None,
        },
    );
    assert_eq!(ok["status"], 200, "{ok}");
    assert_eq!(ok["echoed"], true, "{ok}");
    // Envoy's and ztunnel's limit on streams per connection, advertised.
    assert_eq!(ok["peer_max_streams"], 100, "{ok}");
    // A header list over 64 KiB is not delivered (refused by h2 at either end
    // because the server advertises the limit).
    let huge = probe(
        &lab,
        &Probe {
            name: "huge header",
            cert: &good_cert,
            key: &good_key,
            identity: client_id,
            root: &root,
            expect: server_id,
            plaintext: false,
            header_bytes: 100 << 10,
            message: None,
        },
    );
    assert!(huge["status"] != 200 && huge["echoed"] != true, "{huge}");

    let wrong_san = probe(
        &lab,
        &Probe {
            name: "wrong SAN",
            cert: &good_cert,
            key: &good_key,
            identity: client_id,
            root: &root,
            expect: "spiffe://cluster.local/ns/shop/sa/db",
            plaintext: false,
            header_bytes: 0,
            message: None,
        },
    );
    assert!(
        wrong_san["error"]
            .as_str()
            .unwrap_or("")
            .contains("expected spiffe://cluster.local/ns/shop/sa/db"),
        "{wrong_san}"
    );

    let refused_before = lab
        .counter("b", "shop/server", "hbone_refused_tls")
        .unwrap();
    for (name, cert, key, plaintext) in [
        ("foreign CA", &foreign_cert, &foreign_key, false),
        ("expired", &old_cert, &old_key, false),
        ("plaintext", &good_cert, &good_key, true),
    ] {
        let r = probe(
            &lab,
            &Probe {
                name,
                cert,
                key,
                identity: client_id,
                root: &root,
                expect: server_id,
                plaintext,
                header_bytes: 0,
                message: None,
            },
        );
        assert_eq!(r["stage"], "error", "{name} was not refused: {r}");
    }
    // The server counts a refusal after its alert has gone out: wait for it.
    lab.wait_stats("b", "three TLS refusals counted", |s| {
        s["workloads"]["shop/server"]["hbone_refused_tls"].as_u64() == Some(refused_before + 3)
    })
    .unwrap();
    let log = lab.agent_log("b");
    assert!(log.contains("HBONE TLS handshake refused"), "{log}");
}

#[test]
fn the_ca_refuses_identities_not_on_the_requesting_node() {
    let lab = two_node_lab();
    let root = lab.ca_dir().join("root-cert.pem");
    let token_a = lab.dir.join("tokens").join("a");
    let ask = |node: &str, token: &Path, identity: &str| -> serde_json::Value {
        let out = lab
            .exec_in(
                "a",
                &[
                    &agent(),
                    "request-cert",
                    "--address",
                    "https://198.18.0.254:15012",
                    "--root",
                    &root.display().to_string(),
                    "--node",
                    node,
                    "--token-file",
                    &token.display().to_string(),
                    "--identity",
                    identity,
                ],
            )
            .unwrap();
        serde_json::from_str(out.trim()).unwrap()
    };
    let mine = ask("a", &token_a, "spiffe://cluster.local/ns/shop/sa/client");
    assert_eq!(mine["signed"], true, "{mine}");
    let theirs = ask("a", &token_a, "spiffe://cluster.local/ns/shop/sa/server");
    assert_eq!(theirs["signed"], false, "{theirs}");
    assert!(
        theirs["error"]
            .as_str()
            .unwrap()
            .contains("has no workload on node a"),
        "{theirs}"
    );
    let impostor = ask("b", &token_a, "spiffe://cluster.local/ns/shop/sa/server");
    assert!(
        impostor["error"]
            .as_str()
            .unwrap()
            .contains("wrong bootstrap token for node b"),
        "{impostor}"
    );
    // An empty token (file and header both empty) is no token.
    let empty = lab.dir.join("empty-token");
    std::fs::write(&empty, "").unwrap();
    std::fs::write(lab.dir.join("tokens").join("ghost"), "\n").unwrap();
    let nobody = ask("ghost", &empty, "spiffe://cluster.local/ns/shop/sa/client");
    assert_eq!(nobody["signed"], false, "{nobody}");
    // The control port speaks TLS 1.3 only.
    let s_client = |version: &str| {
        lab.exec_in(
            "a",
            &[
                "sh",
                "-c",
                &format!("openssl s_client -connect 198.18.0.254:15012 {version} </dev/null"),
            ],
        )
    };
    assert!(s_client("-tls1_3").is_ok(), "TLS 1.3 is served");
    assert!(s_client("-tls1_2").is_err(), "TLS 1.2 is refused");
    assert!(
        lab.ca_log().contains("control port TLS refused"),
        "{}",
        lab.ca_log()
    );
}

#[test]
fn certificates_rotate_under_a_short_ttl_while_a_connection_flows() {
    let lab = two_node_lab_with(&["--cert-ttl-secs", "4"]);
    let _server = lab.server("server", &[8080]).expect("server");
    let to = lab.pod("server").addr4(8080).to_string();
    let mut held = lab.app("client", &["hold", "--to", &to]).unwrap();
    held.expect_line("connected", Duration::from_secs(10))
        .unwrap();
    let issued = |lab: &Lab| {
        lab.stats("a").unwrap()["certificate_counters"]["issued"]
            .as_u64()
            .unwrap()
    };
    let start = issued(&lab);
    let mut i = 0;
    // The held connection keeps working through every renewal.
    eventually(Duration::from_secs(30), "three renewals", || {
        held.send_line(&format!("ping {i}")).unwrap();
        held.expect_line(&format!("echo ping {i}"), Duration::from_secs(5))
            .unwrap();
        i += 1;
        let n = issued(&lab);
        if n >= start + 3 {
            Ok(())
        } else {
            Err(format!("{} renewals", n - start))
        }
    })
    .expect("renewals");
    held.send_line("still here").unwrap();
    held.expect_line("echo still here", Duration::from_secs(5))
        .unwrap();
    // New handshakes use the renewed certificates.
    let r = lab
        .run_client("client", &["connect", "--to", &to, "--bytes", "4096"])
        .unwrap();
    assert_intact(&r, 4096);
}

#[test]
fn pooled_connections_carry_one_hundred_streams_each() {
    let lab = two_node_lab();
    let _server = lab.server("server", &[8080]).expect("server");
    let to = lab.pod("server").addr4(8080).to_string();
    // 250 held connections to one pod: three HBONE connections (100 streams each,
    // the limit both ends advertise), none queued behind another.
    let mut holder = lab
        .app("client", &["hold-many", "--to", &to, "--conns", "250"])
        .expect("holder");
    holder
        .expect_line("open 250", Duration::from_secs(30))
        .expect("open");
    lab.wait_stats("b", "250 streams delivered", |s| {
        s["workloads"]["shop/server"]["inbound_delivered"].as_u64() >= Some(250)
    })
    .unwrap();
    let a = lab.stats("a").unwrap();
    assert_eq!(a["hbone"]["pool"]["connections_opened"], 3, "{a:#}");
    drop(holder);
    // And 500 short concurrent connections all go through.
    let r = lab
        .run_client(
            "client",
            &[
                "parallel", "--to", &to, "--conns", "500", "--bytes", "65536",
            ],
        )
        .unwrap();
    assert_eq!(r["ok"], 500, "{r}");
    let a = lab.stats("a").unwrap();
    assert!(
        a["hbone"]["pool"]["streams_opened"].as_u64().unwrap() >= 750,
        "{a:#}"
    );
}

const POLICIES: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: server-from-client, namespace: shop}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/client", "cluster.local/ns/plain/sa/outsider"]}}]
    to: [{operation: {ports: ["8080"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-plain, namespace: shop}
spec:
  action: DENY
  rules:
  - from: [{source: {namespaces: ["plain"]}}]
---
"#;

#[test]
fn l4_policy_matrix_in_the_lab() {
    let mut lab = two_node_lab();
    let _server = lab.server("server", &[8080, 9090]).expect("server");
    let s8080 = lab.pod("server").addr4(8080).to_string();
    let s9090 = lab.pod("server").addr4(9090).to_string();
    // Works only if every byte came back (a refusal is a reset, never an empty echo).
    let works = |lab: &Lab, pod: &str, to: &str| {
        lab.run_client(pod, &["connect", "--to", to, "--bytes", "1024"])
            .is_ok_and(|r| r["received"] == 1024)
    };
    let generation = |lab: &Lab| {
        lab.stats("b").unwrap()["config"]["generation"]
            .as_u64()
            .unwrap()
    };

    // PERMISSIVE, no policy: plaintext from outside the mesh is delivered.
    assert!(works(&lab, "outsider", &s8080));
    // STRICT: plaintext refused, mTLS still served.
    let g = generation(&lab);
    lab.set_extra_config(common::STRICT).unwrap();
    lab.wait_stats("b", "STRICT applied", |s| {
        s["config"]["generation"].as_u64() > Some(g)
    })
    .unwrap();
    assert!(!works(&lab, "outsider", &s8080), "plaintext passed STRICT");
    assert!(
        lab.counter("b", "shop/server", "inbound_refused_plaintext")
            .unwrap()
            >= 1
    );
    assert!(works(&lab, "client", &s8080));

    // Policies: allow by principal and port, deny by namespace.
    let g = generation(&lab);
    lab.set_extra_config(&format!("{}{POLICIES}", common::STRICT))
        .unwrap();
    lab.wait_stats("b", "policies applied", |s| {
        s["config"]["generation"].as_u64() > Some(g)
    })
    .unwrap();
    lab.set_meshed("plain", true).unwrap();
    lab.wait_stats("a", "outsider enrolled", |s| {
        s["enrolled"]
            .as_array()
            .is_some_and(|a| a.iter().any(|w| w == "plain/outsider"))
    })
    .unwrap();
    let denied_before = lab.counter("b", "shop/server", "inbound_denied").unwrap();
    assert!(
        works(&lab, "client", &s8080),
        "allowed principal on an allowed port"
    );
    assert!(!works(&lab, "client", &s9090), "port rule");
    assert!(
        !works(&lab, "other", &s8080),
        "principal not in the ALLOW list"
    );
    assert!(
        !works(&lab, "outsider", &s8080),
        "DENY by namespace wins over ALLOW"
    );
    assert_eq!(
        lab.counter("b", "shop/server", "inbound_denied").unwrap(),
        denied_before + 3
    );
    let log = lab.agent_log("b");
    assert!(
        log.contains("connection refused: denied by policy shop/no-plain")
            && log.contains("spiffe://cluster.local/ns/plain/sa/outsider"),
        "denial not logged with the identities:\n{log}"
    );
    let m = lab.metrics("b").unwrap();
    assert!(
        m.lines().any(
            |l| l.starts_with("ferrymesh_tcp_connections_refused_total{")
                && l.contains(r#"response_flags="DENIED""#)
                && l.contains(r#"source_principal="spiffe://cluster.local/ns/plain/sa/outsider""#)
        ),
        "{m}"
    );
    assert!(m.contains(r#"response_flags="STRICT""#), "{m}");
}

#[test]
fn a_single_node_agent_runs_its_own_ca() {
    let spec = ferrymesh_tests::LabSpec {
        nodes: vec!["solo".into()],
        namespaces: vec![("shop".into(), true)],
        pods: vec![
            ferrymesh_tests::PodSpec::new("client", "shop", "solo"),
            ferrymesh_tests::PodSpec::new("server", "shop", "solo"),
        ],
        local_ca: true,
        ..Default::default()
    };
    let mut lab = Lab::new(spec).unwrap();
    lab.start_agents().unwrap();
    let _server = lab.server("server", &[8080]).expect("server");
    let s = lab
        .wait_stats("solo", "both certificates issued", |s| {
            s["certificate_counters"]["issued"].as_u64() >= Some(2)
        })
        .unwrap();
    let certs = s["certificates"].to_string();
    assert!(
        certs.contains("ns/shop/sa/client") && certs.contains("ns/shop/sa/server"),
        "{certs}"
    );
    assert!(lab.dir.join("local-ca-solo").join("root-cert.pem").exists());
    let to = lab.pod("server").addr4(8080).to_string();
    let r = lab
        .run_client("client", &["connect", "--to", &to, "--bytes", "4096"])
        .unwrap();
    assert_intact(&r, 4096);
}

#[test]
fn a_new_deny_closes_established_connections_it_no_longer_allows() {
    let mut lab = two_node_lab();
    let _server = lab.server("server", &[8080]).expect("server");
    let to = lab.pod("server").addr4(8080).to_string();
    // Two long-lived connections over HBONE: one from the pod the new policy
    // denies, one from another pod.
    let mut denied = lab.app("client", &["hold", "--to", &to]).unwrap();
    denied
        .expect_line("connected", Duration::from_secs(10))
        .unwrap();
    denied.send_line("before").unwrap();
    denied
        .expect_line("echo before", Duration::from_secs(5))
        .unwrap();
    let mut kept = lab.app("other", &["hold", "--to", &to]).unwrap();
    kept.expect_line("connected", Duration::from_secs(10))
        .unwrap();
    lab.set_extra_config(DENY_CLIENT).unwrap();
    lab.wait_stats("b", "the established connection closed by policy", |s| {
        s["workloads"]["shop/server"]["inbound_closed_by_policy"].as_u64() == Some(1)
    })
    .unwrap();
    assert!(
        lab.agent_log("b")
            .contains("established connection closed: denied by policy shop/deny-client"),
        "{}",
        lab.agent_log("b")
    );
    // The denied client's connection is gone; the other one carries on.
    let _ = denied.send_line("after");
    assert!(
        denied
            .expect_line("echo after", Duration::from_secs(5))
            .is_err(),
        "the denied connection still echoes"
    );
    kept.send_line("after").unwrap();
    kept.expect_line("echo after", Duration::from_secs(5))
        .unwrap();
}

const L7_ONLY_PUBLIC: &str = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: public-only, namespace: shop}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/client"]}}]
    to: [{operation: {methods: [GET], paths: ["/public/*"]}}]
"#;

#[test]
fn a_valid_certificate_alone_never_bypasses_the_destinations_l7_policy() {
    let mut lab = two_node_lab();
    let _server = lab.http_server("server", "srv", &[]).expect("server");
    lab.apply_config(L7_ONLY_PUBLIC).unwrap();
    // A client certificate for the allowed principal, used straight against the
    // destination's HBONE port (as a compromised node or a stale agent would),
    // with no source-side waypoint in the path.
    let ca = lab.ca_dir();
    let (cert, key) = (lab.dir.join("direct.pem"), lab.dir.join("direct-key.pem"));
    let issued = Command::new(control_binary().expect("mesh-control binary"))
        .args(["ca", "issue", "--dir"])
        .arg(&ca)
        .args([
            "--identity",
            "spiffe://cluster.local/ns/shop/sa/client",
            "--cert-out",
        ])
        .arg(&cert)
        .arg("--key-out")
        .arg(&key)
        .status()
        .unwrap();
    assert!(issued.success());
    let root = ca.join("root-cert.pem");
    let ask = |path: &str| {
        let message = format!("GET {path} HTTP/1.1\r\nhost: server\r\nconnection: close\r\n\r\n");
        probe(
            &lab,
            &Probe {
                name: path,
                cert: &cert,
                key: &key,
                identity: "spiffe://cluster.local/ns/shop/sa/client",
                root: &root,
                expect: "spiffe://cluster.local/ns/shop/sa/server",
                plaintext: false,
                header_bytes: 0,
                message: Some(&message),
            },
        )
    };
    let denied = ask("/admin");
    assert_eq!(denied["status"], 200, "the tunnel opens: {denied}");
    assert!(
        denied["reply"]
            .as_str()
            .unwrap_or("")
            .starts_with("HTTP/1.1 403"),
        "the request is judged at the destination: {denied}"
    );
    let allowed = ask("/public/x");
    assert!(
        allowed["reply"]
            .as_str()
            .unwrap_or("")
            .starts_with("HTTP/1.1 200"),
        "{allowed}"
    );
    assert!(
        lab.agent_log("b").contains("request denied"),
        "{}",
        lab.agent_log("b")
    );
}
