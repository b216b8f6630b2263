//! An HTTP/1.1 proxy in front of the embedded server for the tests of
//! faults it cannot produce (an expired iterator, trimmed data, throttling):
//! it answers queued errors instead of forwarding, one request per
//! connection, and logs every request body by operation.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A fault the proxy answers instead of forwarding.
#[derive(Debug)]
struct Fault {
    /// `X-Amz-Target` operation, e.g. `GetRecords`.
    operation: &'static str,
    /// Error code, e.g. `ExpiredIteratorException`.
    code: &'static str,
    times: usize,
}

/// An HTTP/1.1 proxy to the embedded server, one request per connection,
/// that answers queued faults instead of forwarding and logs every request
/// body.
pub struct Proxy {
    /// `http://127.0.0.1:PORT`, the endpoint URL for a follower.
    pub url: String,
    faults: Arc<Mutex<VecDeque<Fault>>>,
    log: Arc<Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy to the server at `upstream` (its URL), forwarding.
    pub async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let faults: Arc<Mutex<VecDeque<Fault>>> = Arc::default();
        let log: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let (f, l) = (faults.clone(), log.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (upstream, faults, log) = (upstream.clone(), f.clone(), l.clone());
                tokio::spawn(async move {
                    let _ = serve_one(socket, &upstream, &faults, &log).await;
                });
            }
        });
        Proxy {
            url,
            faults,
            log,
            task,
        }
    }

    /// Answer the next `times` requests for `operation` with error `code`.
    pub fn inject(&self, operation: &'static str, code: &'static str, times: usize) {
        self.faults.lock().unwrap().push_back(Fault {
            operation,
            code,
            times,
        });
    }

    /// Injected answers not yet given.
    pub fn faults_left(&self) -> usize {
        self.faults.lock().unwrap().iter().map(|f| f.times).sum()
    }

    /// Bodies of the requests for `operation` so far.
    pub fn requests(&self, operation: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(op, _)| op == operation)
            .map(|(_, body)| body.clone())
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serve one request on `socket`: log it, then answer the first queued
/// fault for its operation, or forward it and relay the answer.
async fn serve_one(
    mut socket: tokio::net::TcpStream,
    upstream: &str,
    faults: &Mutex<VecDeque<Fault>>,
    log: &Mutex<Vec<(String, String)>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let operation = header("x-amz-target")
        .and_then(|t| t.rsplit('.').next().map(str::to_owned))
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    log.lock().unwrap().push((operation.clone(), body));

    let fault = {
        let mut faults = faults.lock().unwrap();
        let hit = faults
            .iter_mut()
            .find(|f| f.operation == operation && f.times > 0);
        let code = hit.map(|f| {
            f.times -= 1;
            f.code
        });
        faults.retain(|f| f.times > 0);
        code
    };
    if let Some(code) = fault {
        let body = format!(
            "{{\"__type\":\"com.amazonaws.dynamodb.v20120810#{code}\",\"message\":\"injected by the test proxy\"}}"
        );
        let response = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.0\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(response.as_bytes()).await?;
        return socket.shutdown().await;
    }

    // Forward with `connection: close`, relay the response likewise.
    let mut request: Vec<u8> = Vec::new();
    for line in head[..head_end - 4].split("\r\n") {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            request.extend_from_slice(line.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
    }
    request.extend_from_slice(b"connection: close\r\n\r\n");
    request.extend_from_slice(&buf[head_end..]);
    let mut up = tokio::net::TcpStream::connect(upstream).await?;
    up.write_all(&request).await?;
    let mut response = Vec::new();
    up.read_to_end(&mut response).await?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |i| i + 4);
    let response_head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut out: Vec<u8> = Vec::new();
    for line in response_head.trim_end().split("\r\n") {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(&response[split..]);
    socket.write_all(&out).await?;
    socket.shutdown().await
}
