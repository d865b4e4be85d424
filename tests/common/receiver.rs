//! A real HTTP receiver on loopback for webhook tests: records every request
//! (headers and body) and answers with scripted status codes.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use tokio_util::sync::CancellationToken;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    /// The next answers (status, Retry-After, body), in order; once it is
    /// empty, 200 with `body`.
    script: VecDeque<(u16, Option<&'static str>, Option<&'static str>)>,
    /// The body of unscripted answers; "ok" if unset.
    body: Option<&'static str>,
    /// How long each answer takes.
    delay: Duration,
}

pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
}

impl Receiver {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let state = shared.clone();
                async move {
                    let delay = state.lock().unwrap().delay;
                    tokio::time::sleep(delay).await;
                    let mut state = state.lock().unwrap();
                    state.received.push(Received {
                        path: uri.path().to_owned(),
                        headers,
                        body,
                    });
                    let (code, retry_after, body) =
                        state.script.pop_front().unwrap_or((200, None, None));
                    let body = body.or(state.body).unwrap_or("ok");
                    let mut answer = HeaderMap::new();
                    if let Some(after) = retry_after {
                        answer.insert("retry-after", after.parse().unwrap());
                    }
                    if body.starts_with('{') {
                        answer.insert("content-type", "application/json".parse().unwrap());
                    }
                    (StatusCode::from_u16(code).unwrap(), answer, body)
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .unwrap();
        });
        Receiver { addr, state, stop }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next answers' status codes, then 200.
    pub fn answer(&self, codes: &[u16]) {
        let mut state = self.state.lock().unwrap();
        state.script.extend(codes.iter().map(|c| (*c, None, None)));
    }

    /// The next answer: `code` with `body`.
    pub fn answer_with(&self, code: u16, body: &'static str) {
        let mut state = self.state.lock().unwrap();
        state.script.push_back((code, None, Some(body)));
    }

    /// The body of every unscripted (200) answer from now on.
    pub fn reply_body(&self, body: &'static str) {
        self.state.lock().unwrap().body = Some(body);
    }

    /// Every answer from now on comes after `delay`, so requests stay in
    /// flight that long.
    pub fn slow_down(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    /// The next answer: `code` with a `Retry-After`.
    pub fn answer_retry_after(&self, code: u16, after: &'static str) {
        self.state
            .lock()
            .unwrap()
            .script
            .push_back((code, Some(after), None));
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Waits (at most 30 s) until `done` holds for what was received.
    pub async fn wait(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let received = self.received();
            if done(&received) {
                return received;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never received {what}; got {:#?}",
                received
                    .iter()
                    .map(|r| String::from_utf8_lossy(&r.body).into_owned())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
