//! Serving HTTP on a listener that cannot be starved: every listener of the daemon (health,
//! metrics, health-check node ports, which answer on node addresses by design) holds at most
//! [`MAX_CONNECTIONS`] connections, and a connection that does not send a request's headers
//! within [`HEADER_READ_TIMEOUT`] (an idle keep-alive, a slowloris) is closed. Over the limit a
//! new connection is closed at once: the kubelet's and the load balancer's probes retry, and
//! the held ones time out.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections one listener holds at most.
pub const MAX_CONNECTIONS: usize = 256;

/// How long a connection may take to send a request's headers (the first, or the next one on
/// a kept-alive connection).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until the task is aborted; `what` names it in logs.
pub(crate) async fn serve(listener: TcpListener, router: Router, what: &'static str) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors or the like: pause rather than spin.
                tracing::warn!(error = %e, "{what}: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!("{what}: {MAX_CONNECTIONS} connections held; closing a new one");
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            // A client that goes away or times out ends its connection; nothing to report.
            let _ = connection.await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn listening() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().fallback(|| async { "ok" });
        (addr, tokio::spawn(serve(listener, router, "test")))
    }

    /// A connection that never sends its headers is closed after the timeout (paused time: the
    /// clock jumps once every task waits).
    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_after_the_header_timeout() {
        let (addr, server) = listening().await;
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(HEADER_READ_TIMEOUT * 2, silent.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed by the server: {read:?}");
        server.abort();
    }

    /// Past the limit a new connection is closed at once; a held one that goes makes room.
    #[tokio::test]
    async fn connections_beyond_the_limit_are_refused_and_room_comes_back() {
        let (addr, server) = listening().await;
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf)).await.unwrap().unwrap_or(0);
        assert_eq!(n, 0, "the connection over the limit is closed");
        held.clear();
        // Room again: a request is answered (retried while the server notices the closes).
        let mut answered = false;
        for _ in 0..50 {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
            let mut text = String::new();
            let _ = tokio::time::timeout(Duration::from_secs(1), s.read_to_string(&mut text)).await;
            if text.starts_with("HTTP/1.1 200") {
                answered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(answered);
        server.abort();
    }
}
