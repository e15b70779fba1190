//! Posting a rendered body to a target (or printing it, for `console`).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::configuration::TargetSettings;
use crate::targets::Output;
use crate::url_memo::UrlMemo;

/// Largest response body read from a target: enough for any error text, bounded so a hostile
/// endpoint cannot make the relay buffer gigabytes.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A target's answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub retry_after: Option<String>,
    /// The `Location` of a 3xx, which is reported, never followed.
    pub location: Option<String>,
    pub body: String,
}

/// One HTTP client for every target: connections are pooled and reused, and target URLs are
/// parsed once.
#[derive(Clone)]
pub struct Sender {
    http: reqwest::Client,
    urls: Arc<UrlMemo>,
}

impl Sender {
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("sekoia-relay/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            // Never follow: a followed 301/302 turns the POST into a body-less GET whose 200
            // looks delivered, and a 307/308 re-sends the body and the `headers` secrets to
            // whichever host the redirect names. A 3xx is a dead letter naming the new host.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            urls: Arc::default(),
        })
    }

    /// The pooled client, for the bot-token kinds' API calls ([`crate::chatapp`]).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// [`TargetSettings::safe_host`], from the URL parsed once.
    pub fn safe_host(&self, target: &TargetSettings) -> Arc<str> {
        match target.post_url().and_then(|raw| self.urls.parse(raw)) {
            Some(p) => p.safe_host,
            // No URL (stdout) or one that does not parse: the rule says what to show.
            None => target.safe_host().into(),
        }
    }

    /// Send `body` to the target. `Err` is a transport failure (connect, timeout, reset), always
    /// retryable; its text never contains the URL.
    pub async fn send(&self, target: &TargetSettings, body: &str) -> Result<Response, String> {
        if target.kind.spec().output() == Output::StdoutText {
            let mut out = std::io::stdout().lock();
            return writeln!(out, "{body}\n")
                .and_then(|_| out.flush())
                .map(|_| Response {
                    status: 200,
                    retry_after: None,
                    location: None,
                    body: String::new(),
                })
                .map_err(|e| format!("cannot write to stdout: {e}"));
        }
        let Some(url) = target.post_url() else {
            return Err("target has no url".into());
        };
        let spec = target.kind.spec();
        let Some(url) = self.urls.parse(&spec.request_url(url)) else {
            // Configuration validation refuses such a URL first.
            return Err("target url is not a valid URL".into());
        };
        let routing_key = target.routing_key.as_ref().map(|k| k.expose_secret());
        let body = spec.prepare_body(body, routing_key);
        let mut req = self
            .http
            .post(url.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.into_owned());
        for (name, value) in &target.headers {
            req = req.header(name.as_str(), value.expose_secret());
        }
        let mut res = req.send().await.map_err(describe)?;
        let status = res.status().as_u16();
        let header = |name| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let retry_after = header(reqwest::header::RETRY_AFTER);
        let location = header(reqwest::header::LOCATION);
        let mut buf = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(describe)? {
            let room = MAX_RESPONSE_BYTES - buf.len();
            buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if buf.len() >= MAX_RESPONSE_BYTES {
                break;
            }
        }
        Ok(Response {
            status,
            retry_after,
            location,
            body: String::from_utf8_lossy(&buf).into_owned(),
        })
    }
}

/// A transport error without its URL (reqwest includes it in Display).
pub(crate) fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "response body error"
    } else {
        "request failed"
    };
    let e = e.without_url();
    let mut msg = format!("{kind}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}
