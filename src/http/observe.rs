//! Per-route request metrics (`edge_session_http_*`) and one structured log
//! line per request. Never logs headers, cookies or bodies; every metric
//! label is from a bounded set.

use std::collections::HashMap;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

/// Per-route request metrics and one structured log line per request.
/// Never logs headers, cookies or bodies.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let started = Instant::now();
    let method = method_label(req.method());
    let res = next.call(req).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = res.status().as_u16();
    let elapsed = started.elapsed().as_secs_f64();
    // Metric handles per (method, route, status), cached per worker thread:
    // the registry (label keys, hashing, its lock) is paid once per series.
    // Every label is from a bounded set: methods outside the standard ones
    // are "OTHER", routes are patterns or "unmatched".
    type Series = (&'static str, String, u16);
    thread_local! {
        static HANDLES: std::cell::RefCell<HashMap<Series, (metrics::Histogram, metrics::Counter)>> =
            std::cell::RefCell::new(HashMap::new());
    }
    HANDLES.with(|handles| {
        let mut handles = handles.borrow_mut();
        let series = (method, route, status);
        if let Some((h, c)) = handles.get(&series) {
            h.record(elapsed);
            c.increment(1);
            return;
        }
        let route = series.1.clone();
        let h = metrics::histogram!("edge_session_http_request_duration_seconds", "route" => route.clone(), "method" => method);
        let c = metrics::counter!("edge_session_http_requests_total", "route" => route, "method" => method, "status" => status.to_string());
        h.record(elapsed);
        c.increment(1);
        handles.insert(series, (h, c));
    });
    tracing::debug!(method, status, elapsed_ms = elapsed * 1000.0, "request");
    Ok(res)
}

/// A method as a metric label: the standard ones by name, any other
/// (clients may send any token) as "OTHER", so labels stay a bounded set.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}
