//! The request pipeline: everything the node does around a handler, in one
//! middleware with one concrete future, so a request pays for one layer
//! (no boxed future per concern, no lookups by pattern).
//!
//! On the way in, in order:
//! 1. the connection's watchdog learns a request is in flight ([`conn`]);
//! 2. a body gets its deadline ([`body`]);
//! 3. with an ops listener, a request on the wrong listener is 404
//!    ([`ops`]);
//! 4. with an upstream, a path that is not the node's goes there
//!    ([`proxy`]) and its answer is sent as the upstream gave it (the
//!    proxy sets its own headers);
//! 5. otherwise the router serves it.
//!
//! On the way out, for the node's own answers: an error that is not JSON
//! gets the JSON error shape ([`error::json_error`]), the route's metrics are
//! recorded ([`observe`]), `Cache-Control: no-store` per the route table
//! ([`no_store`]), and HTML may not be framed ([`framing`]). Then for every
//! answer: a body cut by its deadline turns the answer into 408, and the
//! request stays in flight until the answer's body is dropped.
//!
//! Each route's [`Route`] (caching and metric handles) is attached to its
//! resource when the app is built, so the answer finds it without a lookup.

use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::Method;

use super::body::{self, BodyLimits, Cut};
use super::conn::{self, InFlight, Tracked};
use super::error::{self, ApiError};
use super::gateway::proxy;
use super::gateway::upstream::Upstream;
use super::no_store::{self, Caching, Raised};
use super::observe::{self, RouteSeries};
use super::state::OpsAddr;
use super::{framing, ops};

/// What the pipeline knows of one route (all methods on one path), on one
/// worker: attached to the route's resource as app data.
pub struct Route {
    series: RouteSeries,
    /// The caching of each method served on the path.
    caching: Vec<(Method, Caching)>,
}

impl Route {
    /// The route served at `pattern`, with its methods' caching.
    pub fn new(pattern: &str, caching: Vec<(Method, Caching)>) -> Self {
        Route {
            series: RouteSeries::new(pattern),
            caching,
        }
    }

    fn caching(&self, method: &Method) -> Option<Caching> {
        self.caching
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, c)| *c)
    }
}

/// Looks up the caching of a route that carries no [`Route`] (by method and
/// matched pattern).
pub type RouteCaching = fn(&Method, &str) -> Option<Caching>;

/// The pipeline's settings, shared by every request of a worker.
struct Settings {
    body_limits: BodyLimits,
    upstream: Option<Rc<Upstream>>,
    ops: OpsAddr,
    caching: RouteCaching,
}

/// The middleware, wrapped around the whole app.
pub struct Pipeline(Rc<Settings>);

impl Pipeline {
    /// `upstream`: the reverse proxy's, if the node is one; `ops`: the ops
    /// listener, once bound; `caching`: the route table's lookup.
    pub fn new(
        body_limits: BodyLimits,
        upstream: Option<Rc<Upstream>>,
        ops: OpsAddr,
        caching: RouteCaching,
    ) -> Self {
        Pipeline(Rc::new(Settings {
            body_limits,
            upstream,
            ops,
            caching,
        }))
    }
}

impl<S> Transform<S, ServiceRequest> for Pipeline
where
    S: Service<ServiceRequest, Response = ServiceResponse, Error = actix_web::Error> + 'static,
    S::Future: Unpin,
{
    type Response = ServiceResponse<Tracked>;
    type Error = actix_web::Error;
    type Transform = PipelineService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(PipelineService {
            service,
            settings: Rc::clone(&self.0),
        }))
    }
}

/// The pipeline around the app's router.
pub struct PipelineService<S> {
    service: S,
    settings: Rc<Settings>,
}

impl<S> Service<ServiceRequest> for PipelineService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse, Error = actix_web::Error>,
    S::Future: Unpin,
{
    type Response = ServiceResponse<Tracked>;
    type Error = actix_web::Error;
    type Future = Answer<S::Future>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        let in_flight = conn::enter(&req);
        let cut = body::guard(&mut req, self.settings.body_limits);
        let ops = self.settings.ops.get();
        let handling = if ops::misrouted(&req, ops) {
            let (req, _) = req.into_parts();
            Handling::Answered(ready(ServiceResponse::from_err(ops::no_such_route(), req)))
        } else {
            match &self.settings.upstream {
                Some(upstream) if proxy::is_proxied(&req, ops) => {
                    Handling::Proxied(Box::pin(proxy::proxied(req, Rc::clone(upstream))))
                }
                _ => Handling::Routed(self.service.call(req)),
            }
        };
        Answer {
            handling,
            settings: Rc::clone(&self.settings),
            in_flight,
            cut,
            started,
        }
    }
}

/// Where a request is being answered.
enum Handling<F> {
    /// By the router.
    Routed(F),
    /// By the upstream.
    Proxied(Pin<Box<dyn Future<Output = ServiceResponse>>>),
    /// Already.
    Answered(Ready<ServiceResponse>),
}

/// The pipeline's future: the answer to one request.
pub struct Answer<F> {
    handling: Handling<F>,
    settings: Rc<Settings>,
    in_flight: Option<InFlight>,
    cut: Option<Cut>,
    started: Instant,
}

impl<F> Future for Answer<F>
where
    F: Future<Output = Result<ServiceResponse, actix_web::Error>> + Unpin,
{
    type Output = Result<ServiceResponse<Tracked>, actix_web::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let res = match &mut this.handling {
            Handling::Routed(fut) => match ready!(Pin::new(fut).poll(cx)) {
                Ok(res) => this.node_answer(res),
                Err(_) if this.was_cut() => {
                    return Poll::Ready(Err(ApiError::body_timeout().into()))
                }
                Err(e) => return Poll::Ready(Err(Raised(e).into())),
            },
            Handling::Proxied(fut) => ready!(fut.as_mut().poll(cx)),
            Handling::Answered(res) => {
                let res = ready!(Pin::new(res).poll(cx));
                this.node_answer(res)
            }
        };
        let res = if this.was_cut() {
            body::timed_out(res)
        } else {
            res
        };
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(
            res.map_body(|_, body| Tracked::new(body.boxed(), in_flight))
        ))
    }
}

impl<F> Answer<F> {
    fn was_cut(&self) -> bool {
        self.cut.as_ref().is_some_and(Cut::is_cut)
    }

    /// The node's own answer, finished: JSON errors, metrics, caching,
    /// framing.
    fn node_answer(&self, res: ServiceResponse) -> ServiceResponse {
        let mut res = error::json_error(res);
        let route = res.request().app_data::<Route>();
        observe::record(
            route.map(|r| &r.series),
            res.request(),
            res.status().as_u16(),
            self.started.elapsed(),
        );
        let caching = match route {
            Some(route) => route.caching(res.request().method()),
            None => {
                let request = res.request();
                request
                    .match_pattern()
                    .and_then(|pattern| (self.settings.caching)(request.method(), &pattern))
            }
        };
        let is_error = res.response().error().is_some();
        no_store::apply(res.headers_mut(), caching, is_error);
        framing::deny_framing(res.headers_mut());
        res
    }
}
