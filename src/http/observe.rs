//! Per-route request metrics (`edge_session_http_*`) and one structured log
//! line per request. Never logs headers, cookies or bodies; every metric
//! label is from a bounded set.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use actix_web::HttpRequest;

/// The metric handles of one route on one worker: made once per (method,
/// status) and then reused, so a request pays no registry lookup, hashing
/// or allocation.
pub struct RouteSeries {
    /// The `route` label: the route's pattern as served.
    route: Rc<str>,
    handles: RefCell<Vec<Handles>>,
}

struct Handles {
    method: &'static str,
    status: u16,
    duration: metrics::Histogram,
    count: metrics::Counter,
}

impl Handles {
    fn new(route: &str, method: &'static str, status: u16) -> Self {
        let route = route.to_owned();
        Handles {
            method,
            status,
            duration: metrics::histogram!("edge_session_http_request_duration_seconds", "route" => route.clone(), "method" => method),
            count: metrics::counter!("edge_session_http_requests_total", "route" => route, "method" => method, "status" => status.to_string()),
        }
    }

    fn record(&self, elapsed: Duration) {
        self.duration.record(elapsed.as_secs_f64());
        self.count.increment(1);
    }
}

impl RouteSeries {
    /// The series of the route served at `route`.
    pub fn new(route: &str) -> Self {
        RouteSeries {
            route: route.into(),
            handles: RefCell::new(Vec::new()),
        }
    }

    fn record(&self, method: &'static str, status: u16, elapsed: Duration) {
        let mut handles = self.handles.borrow_mut();
        if let Some(h) = handles
            .iter()
            .find(|h| h.status == status && h.method == method)
        {
            h.record(elapsed);
            return;
        }
        let h = Handles::new(&self.route, method, status);
        h.record(elapsed);
        handles.push(h);
    }
}

/// Record one request: `route` is its route's series, or `None` where no
/// route carries one (the router's own 404, a 401 raised before a `/v1`
/// route is reached): there the pattern is looked up. Every label is from a
/// bounded set: methods outside the standard ones are "OTHER", routes are
/// patterns or "unmatched".
pub fn record(route: Option<&RouteSeries>, req: &HttpRequest, status: u16, elapsed: Duration) {
    let method = method_label(req.method());
    match route {
        Some(route) => route.record(method, status, elapsed),
        None => {
            let pattern = req
                .match_pattern()
                .unwrap_or_else(|| "unmatched".to_owned());
            thread_local! {
                static OTHERS: RefCell<HashMap<String, RouteSeries>> = RefCell::new(HashMap::new());
            }
            OTHERS.with(|others| {
                others
                    .borrow_mut()
                    .entry(pattern)
                    .or_insert_with_key(|p| RouteSeries::new(p))
                    .record(method, status, elapsed);
            });
        }
    }
    tracing::debug!(
        method,
        status,
        elapsed_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
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
