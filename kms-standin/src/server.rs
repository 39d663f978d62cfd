//! HTTP/1.1 front: the KMS JSON 1.1 protocol on `POST /`, and the admin
//! routes under `/__standin/`.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::control::SettingsUpdate;
use crate::error::KmsError;
use crate::ops::{dispatch, Shared};

/// Far above any KMS request (a RAW message is at most 4 KiB, base64'd);
/// the limit is there so a hostile body cannot take the memory.
pub const MAX_BODY: usize = 1 << 20;

/// How long shutdown waits for calls in flight (a Sign sleeping out a long
/// delay) before it drops them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

type Resp = Response<Full<Bytes>>;

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of file descriptors and the like: back off
                        // instead of spinning, the condition may pass.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let svc = service_fn(move |req| handle(shared.clone(), req));
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let n = shared.requests.fetch_add(1, Ordering::Relaxed);
    let mut resp = route(&shared, req).await;
    let id = format!("00000000-0000-4000-8000-{:012x}", n & 0xffff_ffff_ffff);
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    Ok(resp)
}

async fn route(shared: &Shared, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    if let Some(admin_path) = path.strip_prefix("/__standin/") {
        return admin(shared, admin_path, req).await;
    }
    if req.method() != Method::POST || path != "/" {
        let e = KmsError::unknown_operation(&format!("{} {path}", req.method()));
        return json_response(StatusCode::NOT_FOUND, e.to_json());
    }
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let op = target.strip_prefix("TrentService.").unwrap_or("");
    // The body is read even for an unknown target, so the connection stays usable.
    let result = match read_body(req).await {
        Ok(_) if op.is_empty() => Err(KmsError::unknown_operation(&target)),
        Ok(body) => dispatch(shared, op, &body).await,
        Err(e) => Err(e),
    };
    shared.control.count(op, result.is_ok());
    match result {
        Ok(v) => json_response(StatusCode::OK, v.to_string()),
        Err(e) => json_response(StatusCode::BAD_REQUEST, e.to_json()),
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, KmsError> {
    let too_big = || {
        KmsError::validation(format!(
            "request body is over the stand-in's limit of {MAX_BODY} bytes"
        ))
    };
    // Refused from the declared length before reading: Limited alone would
    // wait for the data, and a client that waits for the answer before it
    // sends the rest would wait forever.
    let declared = req.body().size_hint().lower();
    if declared > MAX_BODY as u64 {
        return Err(too_big());
    }
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_big()),
        Err(e) => Err(KmsError::serialization(format!(
            "could not read the request body: {e}"
        ))),
    }
}

async fn admin(shared: &Shared, path: &str, req: Request<Incoming>) -> Resp {
    let control = &shared.control;
    let method = req.method().clone();
    match (&method, path) {
        (&Method::GET, "stats") => json_ok(&control.stats()),
        (&Method::GET, "settings") => json_ok(&control.settings()),
        (&Method::POST, "settings") => {
            let update = read_body(req).await.and_then(|b| {
                serde_json::from_slice::<SettingsUpdate>(&b)
                    .map_err(|e| KmsError::validation(format!("settings: {e}")))
            });
            match update {
                Ok(u) => {
                    control.apply(&u);
                    json_ok(&control.settings())
                }
                Err(e) => json_response(StatusCode::BAD_REQUEST, e.to_json()),
            }
        }
        _ => {
            let e = KmsError::unknown_operation(&format!(
                "{method} /__standin/{path} (there are GET stats, GET settings, POST settings)"
            ));
            json_response(StatusCode::NOT_FOUND, e.to_json())
        }
    }
}

fn json_ok<T: serde::Serialize>(v: &T) -> Resp {
    match serde_json::to_string(v) {
        Ok(s) => json_response(StatusCode::OK, s),
        Err(e) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            KmsError::new("KMSInternalException", e.to_string()).to_json(),
        ),
    }
}

fn json_response(status: StatusCode, body: String) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    resp
}
