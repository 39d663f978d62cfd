//! Plain-HTTP client for the OCSP responder and the watch stream.
//!
//! OCSP runs over plain HTTP by design (RFC 6960 A.1): the answer is signed,
//! and the request carries a nonce, so the transport adds nothing. Each call
//! opens its own connection: one fetch per TTL does not need a pool.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// An OCSP response is a few hundred bytes; anything past this is not one.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A responder URL checked once at start: `http://host[:port]/path`.
#[derive(Debug, Clone)]
pub struct HttpUrl {
    uri: Uri,
    host: String,
    port: u16,
}

impl HttpUrl {
    pub fn parse(text: &str) -> Result<HttpUrl, String> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "{text:?}: only http:// responder URLs are supported (OCSP answers are signed; \
                 TLS to the responder is not needed)"
            ));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{text:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("{text:?}: user information is not allowed"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(80);
        Ok(HttpUrl { uri, host, port })
    }

    /// The same origin with another path.
    pub fn with_path(&self, path: &str) -> Result<HttpUrl, String> {
        let authority = self.uri.authority().map_or("", |a| a.as_str());
        HttpUrl::parse(&format!("http://{authority}{path}"))
    }

    /// The watch stream beside this OCSP URL: `ca serve` publishes
    /// `{public_url}/ocsp` and `{public_url}/watch`, and `public_url` may
    /// have a path of its own.
    pub fn watch_beside(&self) -> Result<HttpUrl, String> {
        let path = self.uri.path();
        let prefix = path.strip_suffix("/ocsp").unwrap_or("");
        self.with_path(&format!("{prefix}/watch"))
    }

    pub fn as_str(&self) -> String {
        self.uri.to_string()
    }

    fn path(&self) -> &str {
        self.uri.path_and_query().map_or("/", |pq| pq.as_str())
    }

    fn host_header(&self) -> &str {
        self.uri.authority().map_or("", |a| a.as_str())
    }

    async fn open(&self) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.as_str()))?;
        let _ = tcp.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("HTTP to {} failed: {e}", self.as_str()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// POSTs an OCSP request and returns the DER answer.
    pub async fn post_ocsp(
        &self,
        request_der: Vec<u8>,
        timeout: Duration,
    ) -> Result<Bytes, String> {
        let exchange = async {
            let mut sender = self.open().await?;
            let request = Request::post(self.path())
                .header(http::header::HOST, self.host_header())
                .header(http::header::CONTENT_TYPE, "application/ocsp-request")
                .header(http::header::ACCEPT, "application/ocsp-response")
                .body(Full::new(Bytes::from(request_der)))
                .map_err(|e| format!("cannot build the OCSP request: {e}"))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("OCSP exchange with {} failed: {e}", self.as_str()))?;
            self.read_ocsp_body(response).await
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("{} did not answer within {timeout:?}", self.as_str()))?
    }

    async fn read_ocsp_body(&self, response: Response<Incoming>) -> Result<Bytes, String> {
        if response.status() != http::StatusCode::OK {
            return Err(format!(
                "{} answered HTTP {} instead of an OCSP response",
                self.as_str(),
                response.status()
            ));
        }
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !content_type.starts_with("application/ocsp-response") {
            return Err(format!(
                "{} answered {content_type:?} instead of application/ocsp-response",
                self.as_str()
            ));
        }
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer of {} failed: {e}", self.as_str()))?;
        Ok(body.to_bytes())
    }

    /// Opens a long-lived GET (the watch stream) and returns the response
    /// once its head has arrived. `last_event_id` resumes after that event.
    pub async fn get_stream(
        &self,
        timeout: Duration,
        last_event_id: Option<i64>,
    ) -> Result<Response<Incoming>, String> {
        let exchange = async {
            let mut sender = self.open().await?;
            let mut request = Request::get(self.path())
                .header(http::header::HOST, self.host_header())
                .header(http::header::ACCEPT, "text/event-stream");
            if let Some(id) = last_event_id {
                request = request.header("last-event-id", id);
            }
            let request = request
                .body(Full::new(Bytes::new()))
                .map_err(|e| format!("cannot build the watch request: {e}"))?;
            sender
                .send_request(request)
                .await
                .map_err(|e| format!("watch request to {} failed: {e}", self.as_str()))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("{} did not answer within {timeout:?}", self.as_str()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responder_urls() {
        let url = HttpUrl::parse("http://127.0.0.1:8180/ocsp").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("127.0.0.1", 8180));
        assert_eq!(url.path(), "/ocsp");
        assert_eq!(
            url.watch_beside().unwrap().as_str(),
            "http://127.0.0.1:8180/watch"
        );
        let prefixed = HttpUrl::parse("http://ca.example/pki/ocsp").unwrap();
        assert_eq!(
            prefixed.watch_beside().unwrap().as_str(),
            "http://ca.example/pki/watch"
        );
        let elsewhere = HttpUrl::parse("http://ocsp.example/").unwrap();
        assert_eq!(
            elsewhere.watch_beside().unwrap().as_str(),
            "http://ocsp.example/watch"
        );
        let v6 = HttpUrl::parse("http://[::1]/ocsp").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 80));
        assert!(HttpUrl::parse("https://ocsp.example/").is_err());
        assert!(HttpUrl::parse("http://user@ocsp.example/").is_err());
        assert!(HttpUrl::parse("not a url").is_err());
    }
}
