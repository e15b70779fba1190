//! Hostile input: arbitrary bytes and JSON through the real parser and the real server, slow
//! and idle clients, oversized headers and bodies, deeply nested JSON. Nothing may panic, every
//! answer is a documented one, and a real request still gets through.
//!
//! Case counts are bounded for CI; `PROPTEST_CASES=N` runs more (e.g. 100000 for a soak).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use sekoia_relay::domain::event::{EventError, WebhookEvent};
use serde_json::{json, Value};

use crate::helpers::*;

/// `default` cases, or `PROPTEST_CASES` when set; no failure files written into the tree
/// (a failing case is printed, minimised, in the test output).
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
            prop::collection::btree_map(".{0,10}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A real v2 event with its identifying fields replaced by arbitrary values (or removed):
/// the inputs nearest to the validator's decisions.
fn mutated_event() -> impl Strategy<Value = Value> {
    let field = prop_oneof![
        Just(None),
        json_value().prop_map(Some),
        Just(Some(json!("alert"))),
        Just(Some(json!(2))),
    ];
    let short_id = prop_oneof![
        Just(None),
        json_value().prop_map(Some),
        "[A-Za-z0-9]{0,40}".prop_map(|s| Some(json!(s))),
    ];
    (
        (field.clone(), field.clone(), field.clone()),
        (field.clone(), field, short_id),
        0usize..1000,
    )
        .prop_map(|((kind, action, version), (uuid, metadata, short_id), n)| {
            let mut e = alert_event(n);
            let mut set = |ptr: &str, v: Option<Value>| {
                let (parent, key) = ptr.rsplit_once('/').unwrap();
                let obj = if parent.is_empty() {
                    Some(&mut e)
                } else {
                    e.pointer_mut(parent)
                };
                if let Some(Value::Object(o)) = obj {
                    match v {
                        Some(v) => drop(o.insert(key.to_string(), v)),
                        None => drop(o.remove(key)),
                    }
                }
            };
            set("/type", kind);
            set("/action", action);
            set("/metadata/version", version);
            set("/attributes/uuid", uuid);
            set("/attributes/short_id", short_id);
            if let Some(m) = metadata.filter(|m| !m.is_object()) {
                set("/metadata", Some(m));
            }
            e
        })
}

#[test]
fn arbitrary_bytes_never_panic_the_parser() {
    let mut runner = TestRunner::new(config(2000));
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..512), |bytes| {
            // Only the two documented errors exist; what matters is returning at all.
            match WebhookEvent::parse(&bytes) {
                Ok(_) | Err(EventError::NotJson(_)) | Err(EventError::NotV2(_)) => Ok(()),
            }
        })
        .unwrap();
}

#[test]
fn arbitrary_json_is_accepted_or_not_v2_never_not_json() {
    let mut runner = TestRunner::new(config(2000));
    let input = prop_oneof![json_value(), mutated_event()];
    runner
        .run(&input, |value| {
            let text = serde_json::to_vec(&value).unwrap();
            match WebhookEvent::parse(&text) {
                Ok(e) => {
                    // Accepted means the documented minimum is there.
                    prop_assert!(value["type"].as_str().is_some_and(|s| !s.is_empty()));
                    prop_assert!(value["action"].as_str().is_some_and(|s| !s.is_empty()));
                    prop_assert!(value["metadata"].is_object());
                    prop_assert!(e.kind != "alert" || e.uuid.is_some());
                    // A short id, when there is one, is short ASCII alphanumerics.
                    match &value["attributes"]["short_id"] {
                        Value::Null => {}
                        Value::String(s) => prop_assert!(
                            s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric()),
                            "accepted short id {s:?}"
                        ),
                        other => prop_assert!(false, "accepted short id {other}"),
                    }
                }
                Err(EventError::NotV2(m)) => prop_assert!(!m.is_empty()),
                Err(EventError::NotJson(m)) => {
                    prop_assert!(false, "valid JSON called not JSON: {m}: {value}")
                }
            }
            Ok(())
        })
        .unwrap();
}

/// One hostile request: a body and a Content-Type.
#[derive(Debug, Clone)]
struct Hostile {
    body: Vec<u8>,
    content_type: Option<&'static str>,
}

fn hostile_request() -> impl Strategy<Value = Hostile> {
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        mutated_event().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        // Over max_body_bytes (64 KiB in the test config).
        (65_537usize..70_000).prop_map(|n| vec![b'['; n]),
    ];
    let content_type = prop::sample::select(vec![
        None,
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("application/vnd.sekoia+json"),
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
    ]);
    (body, content_type).prop_map(|(body, content_type)| Hostile { body, content_type })
}

#[test]
fn hostile_requests_get_only_documented_answers_from_the_real_server() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = rt.block_on(async {
        let app = TestApp::spawn().await;
        mount_alert(&app.sekoia).await;
        mount_chat_ok(&app.chat).await;
        app
    });
    let mut runner = TestRunner::new(config(200));
    runner
        .run(&hostile_request(), |req| {
            let (status, body) = rt.block_on(async {
                let res = app.post_raw(req.body.clone(), req.content_type).await;
                let status = res.status().as_u16();
                (status, res.bytes().await.unwrap())
            });
            prop_assert!(
                [200, 202, 400, 413, 415, 422].contains(&status),
                "undocumented status {status} for {req:?}"
            );
            let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if status >= 400 {
                prop_assert!(
                    json["detail"].is_string(),
                    "{status} without detail: {json}"
                );
            } else {
                prop_assert!(json["status"].is_string(), "{status}: {json}");
            }
            Ok(())
        })
        .unwrap();
    // And it still serves.
    rt.block_on(async {
        let res = app.post_event(&alert_event(1_000_000)).await;
        assert_eq!(res.status().as_u16(), 202);
    });
}

fn host_port(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_string()
}

/// Send `request` on a fresh connection and return the status code of the answer (None when
/// the server closed the connection without one).
async fn raw_exchange(app: &TestApp, request: Vec<u8>) -> Option<u16> {
    let addr = host_port(app);
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        // The server may answer and close before the whole request is written.
        let _ = s.write_all(&request);
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf)
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_do_not_starve_real_requests() {
    let app = TestApp::spawn().await;
    mount_alert(&app.sekoia).await;
    mount_chat_ok(&app.chat).await;
    let addr = host_port(&app);

    // 500 idle connections that never send a byte.
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // 20 slowloris clients: headers one byte every 100 ms; 5 that trickle a declared body.
    let head = format!(
        "POST /hooks/{HOOK_ID} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n"
    );
    let mut tricklers = Vec::new();
    for i in 0..25 {
        let addr = addr.clone();
        let head = head.clone();
        tricklers.push(tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let start = Instant::now();
            let bytes = if i < 20 {
                head.into_bytes()
            } else {
                // Headers at once, then the body byte by byte.
                s.write_all(head.as_bytes()).await.unwrap();
                vec![b' '; 4000]
            };
            for b in bytes {
                if s.write_all(&[b]).await.is_err() {
                    // Cut off by the server: what we want, eventually.
                    return Some(start.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                if start.elapsed() > Duration::from_secs(30) {
                    return None;
                }
            }
            None
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A real request still gets through, promptly.
    let start = Instant::now();
    let res = app.post_event(&alert_event(1)).await;
    let took = start.elapsed();
    assert_eq!(res.status().as_u16(), 202);
    assert!(
        took < Duration::from_secs(10),
        "a real request waited {took:?}"
    );

    // And the slow clients are cut off (headers within 5 s, body within 10 s), not served
    // forever.
    let mut cut = Vec::new();
    for t in tricklers {
        cut.push(t.await.unwrap());
    }
    println!("slowloris: a real POST took {took:?} among 500 idle connections; slow clients cut off after {cut:?}");
    assert!(
        cut.iter().all(Option::is_some),
        "a slow client was never cut off: {cut:?}"
    );
    drop(idle);
}

#[tokio::test]
async fn oversized_headers_are_refused_without_harm() {
    let app = TestApp::spawn().await;
    mount_alert(&app.sekoia).await;
    mount_chat_ok(&app.chat).await;
    let big = "x".repeat(128 * 1024);
    let res = app
        .client
        .post(app.hook_url())
        .header("X-Big", big.as_str())
        .json(&alert_event(1))
        .send()
        .await;
    let status = res.as_ref().map(|r| r.status().as_u16()).ok();
    // Many headers, each small.
    let mut req = String::from("POST /hooks/x HTTP/1.1\r\nHost: x\r\n");
    for i in 0..2000 {
        req.push_str(&format!("X-H{i}: {i}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    let many = raw_exchange(&app, req.into_bytes()).await;
    println!("oversized headers: one 128 KiB header -> {status:?}; 2000 headers -> {many:?}");
    for s in [status, many].into_iter().flatten() {
        assert!(s == 431 || s == 400, "oversized headers answered {s}");
    }
    // Refused, and the server still serves.
    assert_eq!(app.post_event(&alert_event(2)).await.status().as_u16(), 202);
}

#[tokio::test]
async fn oversized_bodies_are_413_declared_or_chunked() {
    let app = TestApp::spawn().await;
    let big = vec![b' '; 200_000];
    let res = app.post_raw(big, Some("application/json")).await;
    assert_eq!(res.status().as_u16(), 413);
    let body: Value = res.json().await.unwrap();
    assert!(body["detail"].is_string());
    // Chunked: no Content-Length to refuse early, the limit applies while reading.
    let mut req = format!(
        "POST /hooks/{HOOK_ID} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..20 {
        req.extend_from_slice(format!("{:x}\r\n", 8192).as_bytes());
        req.extend_from_slice(&[b' '; 8192]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let status = raw_exchange(&app, req).await;
    assert_eq!(status, Some(413), "a chunked body over the limit");
    assert_eq!(app.post_event(&alert_event(1)).await.status().as_u16(), 202);
}

#[tokio::test]
async fn deeply_nested_json_is_400_not_a_stack_overflow() {
    let app = TestApp::spawn().await;
    let depth = 10_000;
    let arrays = "[".repeat(depth) + &"]".repeat(depth);
    let objects = "{\"a\":".repeat(depth) + "1" + &"}".repeat(depth);
    let inside_an_event = format!(
        r#"{{"type":"alert","action":"created","metadata":{{"version":2}},"attributes":{{"uuid":"u"}},"x":{arrays}}}"#
    );
    for body in [arrays.clone(), objects, inside_an_event] {
        let res = app.post_raw(body, Some("application/json")).await;
        let status = res.status().as_u16();
        let json: Value = res.json().await.unwrap();
        assert_eq!(status, 400, "{json}");
        assert!(json["detail"].as_str().is_some_and(|d| d.contains("JSON")));
    }
    // The parser alone, too (no server in between).
    assert!(matches!(
        WebhookEvent::parse(arrays.as_bytes()),
        Err(EventError::NotJson(_))
    ));
    assert_eq!(app.post_event(&alert_event(1)).await.status().as_u16(), 202);
}
