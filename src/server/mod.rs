//! The HTTP server: each file one concern. `run` wires the service and its workers and runs
//! the accept loop; `routing` decides where a request goes by (method, path, gate); `faces`
//! hands a call to SOAP, REST or the JSON gate; `body` reads call parts within the body cap and
//! budget; `callback` takes operators' signed results; `config` is what `run` is given; `tasks`
//! and `memory` are the periodic work beside the requests. This file holds what every request
//! passes through: its id, span, panic guard, metrics and the access log line.

use std::collections::HashMap;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt as _;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use crate::metrics::{Metrics, Outcome, Served};
use crate::operators::Operators;
use crate::refunds::RefundService;
use crate::soap::SoapReply;
use crate::soap::envelope::SoapVersion;
use crate::soap::fault::Fault;

mod body;
mod callback;
mod config;
mod faces;
mod headers;
mod memory;
mod routing;
mod run;
mod tasks;

pub use config::{Config, MetricsToken};
pub use memory::tune_allocator;
pub use run::{run, run_on};
pub use tasks::AUDIT_SEAL_INTERVAL;

use body::AddressSlots;
use faces::soap_reply;
use headers::header;
use routing::route;

struct App {
    service: RefundService,
    panel: crate::admin::Panel,
    metrics: Arc<Metrics>,
    operators: Arc<Operators>,
    config: Config,
    next_request_id: AtomicU64,
    /// Bytes of request bodies that may be held at once (see `Config::body_budget_bytes`).
    body_budget: Arc<Semaphore>,
    /// The most body bytes held at once since memory was last handed back to the system.
    body_bytes_peak: AtomicUsize,
    anonymous_bodies: AddressSlots,
    /// The part of the body budget anonymous bodies may hold.
    anonymous_body_budget: Arc<Semaphore>,
    /// Open connections per client address on which nobody has authenticated yet.
    unauthenticated_connections: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
}

type Reply = Response<Full<Bytes>>;

async fn serve(app: Arc<App>, request: Request<Incoming>, peer: std::net::SocketAddr) -> Reply {
    let id = app.next_request_id.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!(
        "request",
        id,
        method = %request.method(),
        path = %request.uri().path(),
        operation = tracing::field::Empty
    );
    async move {
        let started = Instant::now();
        // Only a panic needs it, but the request is gone by then; finding it copies nothing.
        let version = SoapVersion::from_content_type(header(&request, CONTENT_TYPE.as_str()));
        let mut reply = match AssertUnwindSafe(route(&app, request, id, peer))
            .catch_unwind()
            .await
        {
            Ok(reply) => reply,
            Err(_) => {
                tracing::error!("request handler panicked");
                soap_reply(SoapReply::fault(&Fault::server(version)))
            }
        };
        reply
            .headers_mut()
            .insert("x-request-id", HeaderValue::from(id));
        let served = reply
            .extensions()
            .get::<Served>()
            .copied()
            .unwrap_or(Served {
                face: "http",
                operation: None,
                outcome: outcome_of(reply.status(), false),
            });
        app.metrics.observe(served, started.elapsed());
        tracing::info!(
            status = reply.status().as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "answered"
        );
        reply
    }
    .instrument(span)
    .await
}

/// The outcome an HTTP status tells, for answers that carry no other.
fn outcome_of(status: StatusCode, business_error: bool) -> Outcome {
    match status.as_u16() {
        207 => Outcome::BusinessError,
        200..=299 if business_error => Outcome::BusinessError,
        200..=299 => Outcome::Ok,
        500..=599 => Outcome::Failed,
        _ => Outcome::Rejected,
    }
}

fn plain(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut reply = Response::new(Full::new(body.into()));
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    reply
}
