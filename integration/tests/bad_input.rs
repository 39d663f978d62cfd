//! Hostile bytes from the agent side: the proxy answers or closes, never
//! crashes or hangs, and still serves a good request afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_never_crashes_or_hangs_the_proxy() {
    let pki = Pki::new();
    let exchange = pki.exchange().await;
    let config = pki.config(
        POLICY,
        exchange.addr(),
        "body_limit = 1024\nheader_read_timeout_ms = 1000\nbody_read_timeout_ms = 1000",
    );
    let mut proxy = ProxyProcess::start(&config);
    let addr = proxy.addr;
    let wait = Duration::from_secs(5);

    let huge_header = format!(
        "GET http://api.exchange.com/ HTTP/1.1\r\nHost: api.exchange.com\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let long_uri = format!(
        "GET http://api.exchange.com/{} HTTP/1.1\r\nHost: api.exchange.com\r\n\r\n",
        "b".repeat(100_000)
    );
    // (request bytes, statuses that are an acceptable answer; 0 = closed without one)
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("garbage request line", b"GARBAGE\r\n\r\n".to_vec(), &[400, 0]),
        ("binary noise", vec![0, 159, 146, 150, 255, 13, 10, 13, 10], &[400, 0]),
        ("unknown HTTP version", b"GET http://api.exchange.com/ HTTP/9.9\r\nHost: a\r\n\r\n".to_vec(), &[400, 505, 0]),
        ("oversized headers", huge_header.into_bytes(), &[431, 400, 0]),
        ("oversized URI", long_uri.into_bytes(), &[414, 431, 400, 0]),
        ("invalid Host header", b"GET http://api.exchange.com/ HTTP/1.1\r\nHost: a b\r\n\r\n".to_vec(), &[400]),
        ("two Host headers", b"GET http://api.exchange.com/ HTTP/1.1\r\nHost: api.exchange.com\r\nHost: evil.example\r\n\r\n".to_vec(), &[400]),
        ("invalid host in URL", b"GET http://api exchange.com/ HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), &[400, 0]),
        ("port out of range", b"GET http://api.exchange.com:99999/ HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), &[400, 0]),
        // hyper resolves these two per RFC 9112 §6.3 before the proxy sees
        // them (chunked framing wins and the connection closes; identical
        // duplicate lengths are one length), so the proxy checks exactly the
        // body it would forward: here an empty or field-less trade, refused.
        (
            "Content-Length with Transfer-Encoding",
            b"POST http://api.exchange.com/v1/trades HTTP/1.1\r\nHost: api.exchange.com\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            &[400, 403],
        ),
        (
            "duplicate Content-Length",
            b"POST http://api.exchange.com/v1/trades HTTP/1.1\r\nHost: api.exchange.com\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            &[400, 403],
        ),
        (
            "conflicting Content-Length",
            b"POST http://api.exchange.com/v1/trades HTTP/1.1\r\nHost: api.exchange.com\r\nContent-Length: 2\r\nContent-Length: 9\r\n\r\n{}".to_vec(),
            &[400],
        ),
        (
            "body over the limit (declared)",
            b"POST http://api.exchange.com/v1/upload HTTP/1.1\r\nHost: api.exchange.com\r\nContent-Length: 5000\r\n\r\n".to_vec(),
            &[413],
        ),
        (
            "body over the limit (chunked)",
            format!(
                "POST http://api.exchange.com/v1/upload HTTP/1.1\r\nHost: api.exchange.com\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n{}\r\n0\r\n\r\n",
                "c".repeat(2048)
            )
            .into_bytes(),
            &[413],
        ),
        ("bad chunk size", b"POST http://api.exchange.com/v1/upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(), &[400, 0]),
        ("NUL in target", b"GET http://api.exchange.com/\x00 HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), &[400, 0]),
        ("https absolute-form", b"GET https://api.exchange.com/ HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), &[400]),
        ("userinfo in URL", b"GET http://user:pw@api.exchange.com/ HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), &[400]),
        ("percent in host", b"GET http://api%2eexchange.com/ HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), &[400]),
        ("dot segment path", b"GET http://api.exchange.com/v1/../admin HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), &[400]),
        ("no request at all, just close", Vec::new(), &[0]),
    ];
    let mut failures = Vec::new();
    for (what, bytes, allowed) in cases {
        let response = tokio::task::spawn_blocking(move || raw(addr, &bytes, wait))
            .await
            .unwrap();
        let status = status_of(&response);
        if !allowed.contains(&status) {
            failures.push(format!(
                "{what}: got {status}: {}",
                response.lines().next().unwrap_or("")
            ));
        }
        assert!(proxy.is_running(), "proxy died after: {what}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // A client that stalls mid-headers is cut off by the header read timeout.
    let (answered, waited) = send_then_stall(
        addr,
        b"GET http://api.exchange.com/ HTTP/1.1\r\nHost: api.ex",
    )
    .await;
    assert!(
        waited < Duration::from_secs(15),
        "a stalled client held its connection open"
    );
    assert!(
        answered.is_empty() || status_of(&answered) == 408,
        "{answered}"
    );

    // A client that sends its head and then stalls mid-body gets 408
    // body_timeout once the body read timeout (1 s here) runs out, and
    // nothing of it is forwarded.
    let (answered, waited) = send_then_stall(
        addr,
        b"POST http://api.exchange.com/v1/upload HTTP/1.1\r\nHost: api.exchange.com\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await;
    assert_eq!(status_of(&answered), 408, "{answered}");
    assert!(answered.contains("body_timeout"), "{answered}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(15),
        "answered after {waited:?}, not at the 1 s body read timeout"
    );

    assert_eq!(exchange.requests(), 0, "nothing bad was forwarded");
    let good = curl(&proxy, &["http://api.exchange.com/v1/markets"]);
    assert_eq!(good.status, 200, "{}", good.body);
    assert!(proxy.is_running());
}

/// Sends `bytes` and then nothing more; what the proxy answered before it
/// closed the connection (up to 20 s), and how long that took.
async fn send_then_stall(addr: std::net::SocketAddr, bytes: &'static [u8]) -> (String, Duration) {
    let started = Instant::now();
    let answered = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.write_all(bytes).unwrap();
        let mut buf = Vec::new();
        let _ = stream.read_to_end(&mut buf);
        buf
    })
    .await
    .unwrap();
    (
        String::from_utf8_lossy(&answered).into_owned(),
        started.elapsed(),
    )
}
