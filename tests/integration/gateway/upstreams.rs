//! Upstreams the Express example cannot stand in for, each on its own socket
//! on 127.0.0.1:0: an echo of request bodies and a source of large bodies
//! (an actix-web server), a raw HTTP/1.1 responder that sends exactly the
//! bytes it is given (hop-by-hop response headers), one that never answers,
//! and an address where nothing listens.

use std::net::SocketAddr;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A running upstream; stopped when dropped.
pub struct Upstream {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
    server: Option<actix_web::dev::ServerHandle>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            drop(server.stop(false));
        }
        self.task.abort();
    }
}

/// `POST /echo`: the request body back, streamed (chunked), with what
/// framing the request arrived in (`x-saw-content-length`,
/// `x-saw-transfer-encoding`). `GET /bytes?n=N`: N bytes, streamed without
/// a length.
pub async fn echo() -> Upstream {
    async fn echo(req: HttpRequest, body: web::Payload) -> HttpResponse {
        let saw = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        HttpResponse::Ok()
            .insert_header(("x-saw-content-length", saw("content-length")))
            .insert_header(("x-saw-transfer-encoding", saw("transfer-encoding")))
            .streaming(body)
    }
    async fn bytes(query: web::Query<std::collections::HashMap<String, usize>>) -> HttpResponse {
        let n = query.get("n").copied().unwrap_or(0);
        let chunk = web::Bytes::from(vec![b'x'; 64 * 1024]);
        let chunks = (0..n.div_ceil(chunk.len())).map(move |i| {
            let len = chunk.len().min(n - i * chunk.len());
            Ok::<_, std::convert::Infallible>(chunk.slice(..len))
        });
        HttpResponse::Ok().streaming(iter_stream(chunks))
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HttpServer::new(|| {
        App::new()
            .route("/echo", web::post().to(echo))
            .route("/bytes", web::get().to(bytes))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    let task = tokio::spawn(async move {
        let _ = server.await;
    });
    Upstream {
        url: format!("http://{addr}"),
        task,
        server: Some(handle),
    }
}

/// An iterator as a stream (each item ready at once).
fn iter_stream<I: Iterator + Unpin>(iter: I) -> IterStream<I> {
    IterStream(iter)
}

pub struct IterStream<I>(I);

impl<I: Iterator + Unpin> futures_core::Stream for IterStream<I> {
    type Item = I::Item;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.get_mut().0.next())
    }
}

/// Reads each request head, then answers `response` as given (if any) and
/// closes; with `None`, never answers (the connection stays open).
pub async fn raw(response: Option<&'static [u8]>) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                match response {
                    Some(bytes) => {
                        let _ = socket.write_all(bytes).await;
                        let _ = socket.shutdown().await;
                    }
                    None => {
                        // Hold the connection until the proxy gives up.
                        let _ = socket.read(&mut buf).await;
                    }
                }
            });
        }
    });
    Upstream {
        url: format!("http://{addr}"),
        task,
        server: None,
    }
}

/// `http://127.0.0.1:<port>` where nothing listens.
pub fn nothing_listening() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}
