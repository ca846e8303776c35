//! A raw HTTP/1.0 GET for tests, so they exercise real listeners without an HTTP client crate.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` from `addr`: the status and body, or `None` when nothing answers.
pub async fn get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes()).await.ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}
