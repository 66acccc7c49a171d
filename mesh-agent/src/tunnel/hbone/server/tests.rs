use std::net::IpAddr;

use http::{Method, Request, StatusCode};

use super::*;

fn req(method: Method, uri: &str) -> Request<()> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(())
        .expect("request")
}

fn addr(s: &str) -> Result<SocketAddr, Refusal> {
    Ok(s.parse().expect("socket address"))
}

fn refused(status: StatusCode, reason: &'static str) -> Result<SocketAddr, Refusal> {
    Err(Refusal {
        status,
        reason,
        hostile: None,
    })
}

#[test]
fn which_connect_requests_are_delivered() {
    let mine: Vec<IpAddr> = vec![
        "198.19.2.10".parse().expect("ip"),
        "2001:db8:1:2::10".parse().expect("ip"),
    ];
    let cases = [
        (
            "a CONNECT to one of the pod's addresses",
            req(Method::CONNECT, "198.19.2.10:8080"),
            addr("198.19.2.10:8080"),
        ),
        (
            "IPv6",
            req(Method::CONNECT, "[2001:db8:1:2::10]:8080"),
            addr("[2001:db8:1:2::10]:8080"),
        ),
        (
            "a v4-mapped address is the IPv4 one",
            req(Method::CONNECT, "[::ffff:198.19.2.10]:8080"),
            addr("198.19.2.10:8080"),
        ),
        (
            "not CONNECT",
            req(Method::GET, "http://198.19.2.10:8080/"),
            refused(StatusCode::METHOD_NOT_ALLOWED, "HBONE accepts CONNECT only"),
        ),
        (
            "a host name, not an address",
            req(Method::CONNECT, "server.shop:8080"),
            refused(StatusCode::BAD_REQUEST, "authority must be ip:port"),
        ),
        (
            "another pod's address",
            req(Method::CONNECT, "198.19.2.11:8080"),
            refused(
                StatusCode::BAD_REQUEST,
                "authority is not an address of this workload",
            ),
        ),
        (
            "the agent's own inbound port: a loop",
            req(Method::CONNECT, "198.19.2.10:15006"),
            Err(Refusal {
                status: StatusCode::BAD_REQUEST,
                reason: "the target port is one of the agent's own",
                hostile: Some(Reason::AgentPort),
            }),
        ),
        (
            "the agent's HBONE port: a nested tunnel",
            req(Method::CONNECT, "198.19.2.10:15008"),
            Err(Refusal {
                status: StatusCode::BAD_REQUEST,
                reason: "the target port is one of the agent's own",
                hostile: Some(Reason::AgentPort),
            }),
        ),
    ];
    for (name, r, want) in cases {
        assert_eq!(connect_target(&r, &mine), want, "{name}");
    }
}
