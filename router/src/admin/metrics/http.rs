//! The metrics endpoint's HTTP side: hyper's HTTP/1.1 server, one request per connection.
//! `GET /metrics` answers the scrape; any other path 404; another method on `/metrics` 405
//! (with `Allow: GET`); a request hyper cannot parse 400, a request head past
//! [`Limits::head_bytes`] 431.
//!
//! Nothing a client does holds the router's resources for long: the request head must arrive
//! within [`Limits::head_time`], a connection lives at most [`Limits::connection_time`]
//! (whether the client does not read or the main loop does not answer), and at most
//! [`Limits::connections`] are open at once (more are closed as they are accepted).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// The content type of the exposition (OpenMetrics text, which Prometheus reads).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PLAIN: &str = "text/plain; charset=utf-8";

/// How much a client may ask of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and headers), in bytes.
    pub head_bytes: usize,
    /// A client must send its whole request head within this time.
    pub head_time: Duration,
    /// A connection is closed this long after it was accepted, answered or not.
    pub connection_time: Duration,
    /// Connections served at once.
    pub connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head_bytes: 8 * 1024,
            head_time: Duration::from_secs(5),
            connection_time: Duration::from_secs(10),
            connections: 16,
        }
    }
}

/// Why a scrape has no exposition to serve (answered 503).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    ShuttingDown,
    Encoding,
}

impl Unavailable {
    fn body(self) -> &'static str {
        match self {
            Unavailable::ShuttingDown => "the router is shutting down\n",
            Unavailable::Encoding => "the metrics could not be encoded (see the router's log)\n",
        }
    }
}

/// Accepts connections until aborted and answers `GET /metrics` with what `scrape` returns.
pub async fn serve<S, F>(listener: TcpListener, limits: Limits, scrape: S)
where
    S: Fn() -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<String, Unavailable>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.connections));
    // Dropping the set (when this task is aborted) aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match Arc::clone(&slots).try_acquire_owned() {
                Ok(slot) => {
                    connections.spawn(connection(stream, limits, scrape.clone(), slot));
                }
                Err(_) => {
                    tracing::debug!(%peer, open = limits.connections, "metrics connection closed at once: too many open");
                }
            },
            Err(error) => {
                tracing::debug!(%error, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        while connections.try_join_next().is_some() {}
    }
}

/// Serves one connection within the limits; `_slot` is given back when it ends.
async fn connection<S, F>(stream: TcpStream, limits: Limits, scrape: S, _slot: OwnedSemaphorePermit)
where
    S: Fn() -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<String, Unavailable>> + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let scrape = scrape.clone();
        async move { Ok::<_, Infallible>(respond(&request, scrape).await) }
    });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.head_time)
        .max_header_size(limits.head_bytes)
        .keep_alive(false);
    let served = http.serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(limits.connection_time, served).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "metrics connection failed"),
        Err(_) => tracing::debug!(
            limit = ?limits.connection_time,
            "metrics connection closed: open past its time limit"
        ),
    }
}

async fn respond<S, F>(request: &Request<Incoming>, scrape: S) -> Response<Full<Bytes>>
where
    S: Fn() -> F,
    F: Future<Output = Result<String, Unavailable>>,
{
    if request.uri().path() != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found; metrics are at /metrics\n".into(),
        );
    }
    if request.method() != Method::GET {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "only GET\n".into());
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    match scrape().await {
        Ok(exposition) => text(StatusCode::OK, OPENMETRICS, exposition),
        Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, why.body().into()),
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Small limits, so that the tests wait little.
    const LIMITS: Limits = Limits {
        head_bytes: 8 * 1024,
        head_time: Duration::from_millis(300),
        connection_time: Duration::from_millis(800),
        connections: 4,
    };
    /// Longer than any limit above: what a test waits at most for the server to act.
    const PATIENCE: Duration = Duration::from_secs(5);

    /// A server on a loopback port; `scrape` answers "up 1" or never answers (`hang`).
    async fn server(hang: bool) -> SocketAddr {
        server_with(LIMITS, hang).await
    }

    async fn server_with(limits: Limits, hang: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scrape = move || async move {
            if hang {
                std::future::pending::<()>().await;
            }
            Ok::<_, Unavailable>("# TYPE up gauge\nup 1\n# EOF\n".to_owned())
        };
        tokio::spawn(serve(listener, limits, scrape));
        addr
    }

    /// Sends `request` and reads until the server closes; `None` if it did not within PATIENCE.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> Option<String> {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // The server may close while we still write (a head too long): that is its answer.
        let _ = stream.write_all(request).await;
        read_to_close(&mut stream).await
    }

    async fn read_to_close(stream: &mut TcpStream) -> Option<String> {
        let mut response = Vec::new();
        match tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response)).await {
            Ok(_) => Some(String::from_utf8_lossy(&response).into_owned()),
            Err(_) => None,
        }
    }

    #[tokio::test]
    async fn get_metrics_is_served_and_nothing_else() {
        let addr = server(false).await;
        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains(&format!("content-type: {OPENMETRICS}\r\n")),
            "{ok}"
        );
        assert!(
            ok.ends_with("\r\n\r\n# TYPE up gauge\nup 1\n# EOF\n"),
            "{ok}"
        );
        let query = exchange(addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").await;
        assert!(query.unwrap().contains(" 200 OK\r\n"));
        let elsewhere = exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(elsewhere.unwrap().starts_with("HTTP/1.1 404"));
        let post = exchange(
            addr,
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
        )
        .await
        .unwrap();
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        assert!(post.contains("allow: GET\r\n"), "{post}");
    }

    #[tokio::test]
    async fn garbage_and_oversized_heads_are_refused() {
        let addr = server(false).await;
        let garbage = exchange(addr, b"\xff\xfe garbage\r\n\r\n").await.unwrap();
        assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
        let mut long = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 9 * 1024));
        long.extend_from_slice(b"\r\n\r\n");
        let refused = exchange(addr, &long).await.unwrap();
        assert!(refused.starts_with("HTTP/1.1 431"), "{refused}");
        // Still serving.
        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(ok.unwrap().contains(" 200 OK\r\n"));
    }

    #[tokio::test]
    async fn a_slow_or_silent_client_is_cut_off() {
        let addr = server(false).await;
        for partial in [&b""[..], b"GET /metrics HTTP/1.1\r\nHost:"] {
            let start = Instant::now();
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(partial).await.unwrap();
            let response = read_to_close(&mut stream).await;
            assert!(response.is_some(), "{partial:?}: still open");
            let waited = start.elapsed();
            assert!(
                waited >= LIMITS.head_time && waited < PATIENCE,
                "{partial:?}: closed after {waited:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_scrape_that_never_answers_frees_its_connection() {
        let addr = server(true).await;
        let start = Instant::now();
        let response = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(response.as_deref(), Some(""), "closed without an answer");
        assert!(start.elapsed() >= LIMITS.connection_time);
    }

    #[tokio::test]
    async fn connections_past_the_limit_are_closed_at_once() {
        // Idle clients hold their slots for long enough that the one too many comes first.
        let limits = Limits {
            head_time: Duration::from_secs(2),
            ..LIMITS
        };
        let addr = server_with(limits, false).await;
        let mut idle = Vec::new();
        for _ in 0..limits.connections {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // Accepted after the idle ones (the listen queue is in order): no slot, closed
        // without an answer, where a served request gets one.
        let refused = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(refused.as_deref(), Some(""));
        // Once the idle ones are cut off, the server serves again.
        for stream in &mut idle {
            assert!(read_to_close(stream).await.is_some());
        }
        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(ok.unwrap().contains(" 200 OK\r\n"));
    }
}
