//! The HTTP server: accept loop, routing by (method, path, gate), body cap, graceful shutdown.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use chrono_tz::Tz;
use futures_util::FutureExt as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use crate::clock::Clock;
use crate::metrics::{Metrics, Outcome, Served};
use crate::operators::http::OperatorMessage;
use crate::operators::{Operators, OperatorsConfig};
use crate::refunds::ledger::{AuditSealing, LedgerStore};
use crate::refunds::{CallbackOutcome, Policy, RefundError, RefundService};
use crate::rest::{self, JsonReply};
use crate::soap::envelope::{SoapVersion, XmlLimits};
use crate::soap::fault::Fault;
use crate::soap::{self, SoapReply};
use crate::store::{self, Database};

/// Everything `run` needs; the command line fills it, tests build it directly.
#[derive(Debug, Clone)]
pub struct Config {
    /// The ledger: an SQLite file, or a PostgreSQL URL.
    pub database: Database,
    /// Base URL clients reach us at, for the WSDL's `soap:address`; else the request's Host.
    pub public_url: Option<String>,
    pub timezone: Tz,
    pub clock: Clock,
    pub max_body_bytes: usize,
    pub xml_limits: XmlLimits,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Payment operators for confirmed automatic refunds (default: the sandbox for all).
    pub operators: OperatorsConfig,
    /// Maker-checker: confirmRefund refuses (faultCode 4021) when the confirming user or key is
    /// the one that added the refund.
    pub require_second_approver: bool,
    /// How long idempotency keys are kept.
    pub idempotency_ttl: Duration,
    /// How long checked credentials are trusted before the ledger is read again (the longest a
    /// revoked key or changed password keeps working).
    pub credentials_ttl: Duration,
    /// Whether this instance runs the outbox worker. Off, confirmed automatic refunds wait in
    /// the outbox (fixture tests use this to keep `Processing` refunds still).
    pub run_outbox: bool,
}

impl Config {
    pub fn new(database: Database) -> Config {
        Config {
            database,
            public_url: None,
            timezone: chrono_tz::Europe::Warsaw,
            clock: Clock::System,
            max_body_bytes: 1024 * 1024,
            xml_limits: XmlLimits::default(),
            max_connections: 8192,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            operators: OperatorsConfig::default(),
            run_outbox: true,
            require_second_approver: false,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            credentials_ttl: Duration::from_secs(1),
        }
    }
}

/// Keeps glibc's allocator from handing freed memory back to the kernel after every request.
///
/// SQLite builds and drops small in-memory tables while checking a refund (its `IN (…)`
/// constraints), and by default glibc then trims the heap with `madvise`, which on a
/// multi-threaded process flushes every core's TLB: a profile of addManualRefund under load put
/// a tenth of the writer thread's time there. Memory is still trimmed above 64 MiB of free
/// heap. Process-wide, so the binary calls it once at start-up; other allocators ignore it.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes the allocator's own lock and only changes two thresholds.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

struct App {
    service: RefundService,
    panel: crate::admin::Panel,
    metrics: Metrics,
    operators: Arc<Operators>,
    config: Config,
    next_request_id: AtomicU64,
}

type Reply = Response<Full<Bytes>>;

/// Serves on `listener` until `shutdown` resolves, then lets open requests finish (up to the
/// grace period) and closes the store.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let database = config.database.clone();
    let store = tokio::task::spawn_blocking(move || store::open(&database))
        .await
        .context("opening the store")??;
    run_on(listener, config, store, shutdown).await
}

/// Serves like [`run`], over a ledger store opened already (`config.database` is not opened
/// again): the seam for another adapter of the storage port.
pub async fn run_on(
    listener: TcpListener,
    config: Config,
    store: Arc<dyn LedgerStore>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let operators = Arc::new(
        config
            .operators
            .build()
            .context("configuring payment operators")?,
    );
    let service = RefundService::new(
        store.clone(),
        config.clock,
        config.timezone,
        Policy {
            routing: operators.routing.clone(),
            require_second_approver: config.require_second_approver,
            idempotency_ttl_seconds: i64::try_from(config.idempotency_ttl.as_secs())
                .unwrap_or(i64::MAX),
            credentials_ttl: config.credentials_ttl,
        },
    );
    let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = config.run_outbox.then(|| {
        tokio::spawn(crate::outbox::run(
            service.clone(),
            operators.clone(),
            async {
                let _ = worker_stopped.await;
            },
        ))
    });
    let housekeeping = tokio::spawn(housekeeping(service.clone()));
    let sealer = (service.audit_sealing() == AuditSealing::ByLeader)
        .then(|| tokio::spawn(seal_audit(service.clone())));
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let app = Arc::new(App {
        service,
        panel: crate::admin::Panel::new(),
        metrics: Metrics::new(),
        operators,
        config,
        next_request_id: AtomicU64::new(1),
    });
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(app.config.header_read_timeout);

    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.context("connection limiter closed")?,
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |request| {
            let app = app.clone();
            async move { Ok::<_, std::convert::Infallible>(serve(app, request, peer).await) }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(permit);
        });
    }

    tracing::info!("shutting down: finishing open requests");
    housekeeping.abort();
    if let Some(sealer) = sealer {
        sealer.abort();
    }
    let _ = stop_worker.send(());
    if let Some(worker) = worker {
        let _ = worker.await;
    }
    if tokio::time::timeout(app.config.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open after the grace period");
    }
    tokio::task::spawn_blocking(move || store.close())
        .await
        .context("closing the store")?;
    Ok(())
}

/// How often audit entries are chained where a leader chains them after commit: the longest an
/// entry stays outside the chain while the database answers.
pub const AUDIT_SEAL_INTERVAL: Duration = Duration::from_millis(200);

/// Chains the audit entries that writes appended, in batches, whenever no other instance is
/// doing it (only for stores whose writes run side by side).
async fn seal_audit(service: RefundService) {
    let mut every = tokio::time::interval(AUDIT_SEAL_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        // A full batch means more may be waiting: go on at once.
        loop {
            match service.seal_audit(1000).await {
                Ok(1000) => continue,
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(error = error.log_text(), "chaining audit entries failed");
                    break;
                }
            }
        }
    }
}

/// Forgets expired idempotency keys, panel sessions and old failed sign-ins every ten minutes.
async fn housekeeping(service: RefundService) {
    let mut every = tokio::time::interval(Duration::from_secs(600));
    loop {
        every.tick().await;
        match service.purge_idempotency_keys().await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired idempotency keys forgotten"),
            Err(error) => {
                tracing::warn!(error = error.log_text(), "purging idempotency keys failed")
            }
        }
        match service.purge_panel_records().await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(
                purged,
                "expired panel sessions and sign-in failures forgotten"
            ),
            Err(error) => {
                tracing::warn!(error = error.log_text(), "purging panel sessions failed")
            }
        }
    }
}

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
        let content_type = header(&request, CONTENT_TYPE.as_str()).map(str::to_owned);
        let mut reply = match AssertUnwindSafe(route(&app, request, id, peer))
            .catch_unwind()
            .await
        {
            Ok(reply) => reply,
            Err(_) => {
                tracing::error!("request handler panicked");
                soap_reply(SoapReply::fault(&Fault::server(
                    SoapVersion::from_content_type(content_type.as_deref()),
                )))
            }
        };
        if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
            reply.headers_mut().insert("x-request-id", value);
        }
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

/// Where a request goes.
enum Route {
    Wsdl {
        address: String,
    },
    Soap,
    Rest {
        operation: String,
    },
    JsonGate {
        operation: String,
    },
    OpenApi,
    OperatorCallback {
        operator: String,
    },
    Health,
    Ready,
    Metrics,
    /// The admin panel, under `/admin` (see `crate::admin`).
    Admin,
    NotFound,
    /// A JSON route that does not exist (answered in JSON).
    JsonNotFound,
    MethodNotAllowed(&'static str),
}

fn route_of(app: &App, request: &Request<Incoming>) -> Route {
    let path = request.uri().path();
    let query = request.uri().query().unwrap_or("");
    let method = request.method();
    if let Some(name) = path
        .strip_prefix("/operators/")
        .and_then(|rest| rest.strip_suffix("/callback"))
    {
        return match *method {
            Method::POST => Route::OperatorCallback {
                operator: name.to_owned(),
            },
            _ => Route::MethodNotAllowed("POST"),
        };
    }
    if path == "/admin" || path.starts_with("/admin/") {
        return Route::Admin;
    }
    if let Some(rest) = path.strip_prefix("/api/admin/") {
        return match rest_operation(rest) {
            Some(operation) => Route::Rest {
                operation: operation.to_owned(),
            },
            None => Route::JsonNotFound,
        };
    }
    match path {
        "/soap/refunds" => {
            let wants_wsdl = query
                .split('&')
                .any(|pair| pair.eq_ignore_ascii_case("wsdl"));
            match *method {
                Method::GET | Method::HEAD if wants_wsdl => Route::Wsdl {
                    address: format!("{}/soap/refunds", base_url(app, request)),
                },
                Method::POST => Route::Soap,
                _ => Route::MethodNotAllowed("GET, HEAD, POST"),
            }
        }
        "/api/" | "/api" => {
            let gate = form_urlencoded::parse(query.as_bytes())
                .find(|(key, _)| key == "gate")
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default();
            let Some(gate) = Gate::parse(&gate) else {
                return Route::NotFound;
            };
            match (gate.face, gate.wsdl, method) {
                ("soap", true, &Method::GET) => Route::Wsdl {
                    address: format!(
                        "{}/api/?gate=refunds/{}/{}/soap",
                        base_url(app, request),
                        gate.operation,
                        gate.version
                    ),
                },
                ("soap", true, _) => Route::MethodNotAllowed("GET"),
                ("soap", false, &Method::POST) => Route::Soap,
                ("json", false, &Method::POST) => Route::JsonGate {
                    operation: gate.operation.to_owned(),
                },
                (_, false, _) => Route::MethodNotAllowed("POST"),
                _ => Route::NotFound,
            }
        }
        "/api/doc/admin/v6/json" => match *method {
            Method::GET => Route::OpenApi,
            _ => Route::MethodNotAllowed("GET"),
        },
        "/healthz" => Route::Health,
        "/readyz" => Route::Ready,
        "/metrics" => Route::Metrics,
        _ => Route::NotFound,
    }
}

/// `v{N}/refunds/{operation}` with N = 1…6.
fn rest_operation(path: &str) -> Option<&str> {
    let (version, rest) = path.strip_prefix('v')?.split_once('/')?;
    let version: u32 = version.parse().ok()?;
    if !rest::VERSIONS.contains(&version) {
        return None;
    }
    let operation = rest.strip_prefix("refunds/")?;
    (!operation.is_empty() && !operation.contains('/')).then_some(operation)
}

/// `gate=refunds/{operation}/{version}/{face}[/wsdl]`.
struct Gate<'a> {
    operation: &'a str,
    version: u32,
    face: &'static str,
    wsdl: bool,
}

impl<'a> Gate<'a> {
    fn parse(gate: &'a str) -> Option<Gate<'a>> {
        let mut parts = gate.trim_matches('/').split('/');
        if parts.next()? != "refunds" {
            return None;
        }
        let operation = parts.next().filter(|name| {
            !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric())
        })?;
        let version = parts.next()?.parse().ok()?;
        let face = match parts.next()? {
            "soap" => "soap",
            "json" => "json",
            _ => return None,
        };
        let wsdl = match parts.next() {
            None => false,
            Some("wsdl") => true,
            Some(_) => return None,
        };
        parts.next().is_none().then_some(Gate {
            operation,
            version,
            face,
            wsdl,
        })
    }
}

async fn route(
    app: &App,
    request: Request<Incoming>,
    id: u64,
    peer: std::net::SocketAddr,
) -> Reply {
    let request_id = Some(id.to_string());
    match route_of(app, &request) {
        Route::Admin => {
            let incoming = crate::admin::PanelRequest {
                request,
                peer,
                request_id: id,
            };
            app.panel.handle(&app.service, incoming).await
        }
        Route::Wsdl { address } => plain(
            StatusCode::OK,
            "text/xml; charset=utf-8",
            soap::wsdl::with_address(&address),
        ),
        Route::Soap => soap_request(app, request, request_id).await,
        Route::Rest { operation } => rest_request(app, request, &operation, request_id).await,
        Route::JsonGate { operation } => gate_request(app, request, &operation, request_id).await,
        Route::OpenApi => plain(StatusCode::OK, JSON, rest::OPENAPI.to_owned()),
        Route::Metrics => match app.service.counts().await {
            Ok(counts) => plain(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                app.metrics.render(&counts),
            ),
            Err(error) => ledger_unavailable(&error, "metrics"),
        },
        Route::Ready => match app.service.ready().await {
            Ok(()) => plain(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                "ready\n".to_owned(),
            ),
            Err(error) => ledger_unavailable(&error, "readiness"),
        },
        Route::OperatorCallback { operator } => callback_request(app, request, &operator).await,
        Route::Health => plain(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "ok\n".to_owned(),
        ),
        Route::NotFound => plain(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: the SOAP endpoint is POST /soap/refunds (WSDL at GET /soap/refunds?wsdl); \
             REST at /api/admin/v6/refunds/{operation}\n"
                .to_owned(),
        ),
        Route::JsonNotFound => json_reply(JsonReply::error(
            404,
            2,
            "not found: the REST API is /api/admin/v{1-6}/refunds/{operation}",
        )),
        Route::MethodNotAllowed(allowed) => {
            let mut reply = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                format!("method not allowed here; use {allowed}\n"),
            );
            if let Ok(value) = HeaderValue::from_str(allowed) {
                reply.headers_mut().insert("allow", value);
            }
            reply
        }
    }
}

/// 503 for a monitoring route whose ledger read failed; the cause goes to the log.
fn ledger_unavailable(error: &RefundError, route: &str) -> Reply {
    tracing::error!(
        route,
        error = error.log_text(),
        "the ledger does not answer"
    );
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain; charset=utf-8",
        "the ledger does not answer\n".to_owned(),
    )
}

const JSON: &str = "application/json";

async fn rest_request(
    app: &App,
    request: Request<Incoming>,
    operation: &str,
    request_id: Option<String>,
) -> Reply {
    let method = request.method().as_str().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let parts = match call_parts(app, request).await {
        Ok(parts) => parts,
        Err(error) => return json_reply(error.json(app)),
    };
    let call = rest::RestCall {
        method: &method,
        operation,
        query: &query,
        api_key: parts.api_key,
        idempotency_key: parts.idempotency_key,
        request_id,
        body: &parts.body,
    };
    json_reply(rest::handle_rest(&app.service, call).await)
}

async fn gate_request(
    app: &App,
    request: Request<Incoming>,
    operation: &str,
    request_id: Option<String>,
) -> Reply {
    let parts = match call_parts(app, request).await {
        Ok(parts) => parts,
        Err(error) => return json_reply(error.json(app)),
    };
    let call = rest::GateCall {
        operation,
        api_key: parts.api_key,
        idempotency_key: parts.idempotency_key,
        request_id,
        body: &parts.body,
    };
    json_reply(rest::handle_gate(&app.service, call).await)
}

fn json_reply(reply: JsonReply) -> Reply {
    if let Some(operation) = reply.operation {
        tracing::Span::current().record("operation", operation);
    }
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let outcome = outcome_of(status, reply.business_error);
    let mut response = plain(status, JSON, reply.body);
    response.extensions_mut().insert(Served {
        face: "json",
        operation: reply.operation,
        outcome,
    });
    if let Some(allow) = reply.allow {
        response
            .headers_mut()
            .insert("allow", HeaderValue::from_static(allow));
    }
    if reply.replayed {
        response
            .headers_mut()
            .insert("idempotency-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// `POST /operators/{name}/callback`: an operator's asynchronous result, signed.
async fn callback_request(app: &App, request: Request<Incoming>, name: &str) -> Reply {
    let signature = header(&request, "x-signature").map(str::to_owned);
    let body = match read_body(app, request).await {
        Ok(body) => body,
        Err(error) => return json_reply(error.json(app)),
    };
    let answer = |status: u16, message: &str| {
        let body = serde_json::json!({ "status": status, "message": message }).to_string();
        plain(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            JSON,
            body,
        )
    };
    let Some(operator) = app.operators.get(name) else {
        return answer(404, "no such operator");
    };
    if !operator.verify_callback(&body, signature.as_deref()) {
        tracing::warn!(operator = name, "callback with a bad signature refused");
        return answer(401, "bad signature");
    }
    let message: OperatorMessage = match serde_json::from_slice(&body) {
        Ok(message) => message,
        Err(_) => return answer(400, "the body is not a callback message"),
    };
    let Some(refund_id) = message.refund_id else {
        return answer(400, "refundId is missing");
    };
    match app
        .service
        .operator_callback(name, refund_id, message.answer())
        .await
    {
        Ok(Some(CallbackOutcome::Settled)) => answer(200, "settled"),
        Ok(Some(CallbackOutcome::Ignored)) => answer(200, "ignored: nothing to change"),
        Ok(None) => answer(404, "no such refund for this operator"),
        Err(error) => {
            tracing::error!(error = error.log_text(), "callback failed");
            answer(500, "the gateway failed; the cause is in its log")
        }
    }
}

async fn soap_request(app: &App, request: Request<Incoming>, request_id: Option<String>) -> Reply {
    let content_type = header(&request, CONTENT_TYPE.as_str()).map(str::to_owned);
    let version = SoapVersion::from_content_type(content_type.as_deref());
    let parts = match call_parts(app, request).await {
        Ok(parts) => parts,
        Err(error) => return soap_reply(SoapReply::fault(&error.fault(app, version))),
    };
    let call = soap::SoapCall {
        body: &parts.body,
        content_type: content_type.as_deref(),
        api_key: parts.api_key.as_deref(),
        idempotency_key: parts.idempotency_key,
        request_id,
    };
    let reply = soap::handle(&app.service, call, &app.config.xml_limits).await;
    if let Some(operation) = reply.operation {
        tracing::Span::current().record("operation", operation);
    }
    soap_reply(reply)
}

/// What every face takes from a call's request besides its path: the API key, the
/// idempotency key and the body.
struct CallParts {
    api_key: Option<String>,
    idempotency_key: Option<String>,
    body: Bytes,
}

/// Why a request's [`CallParts`] could not be read.
enum PartsError {
    /// A malformed `Idempotency-Key` header.
    IdempotencyKey(String),
    Body(BodyError),
}

impl PartsError {
    fn fault(&self, app: &App, version: SoapVersion) -> Fault {
        match self {
            PartsError::IdempotencyKey(message) => Fault::client(version, message.clone()),
            PartsError::Body(error) => error.fault(app, version),
        }
    }

    fn json(&self, app: &App) -> JsonReply {
        match self {
            PartsError::IdempotencyKey(message) => JsonReply::error(422, 2, message),
            PartsError::Body(error) => error.json(app),
        }
    }
}

async fn call_parts(app: &App, request: Request<Incoming>) -> Result<CallParts, PartsError> {
    let api_key = api_key_of(&request);
    let idempotency_key = idempotency_key_of(&request).map_err(PartsError::IdempotencyKey)?;
    let body = read_body(app, request).await.map_err(PartsError::Body)?;
    Ok(CallParts {
        api_key,
        idempotency_key,
        body,
    })
}

enum BodyError {
    TooLarge,
    Timeout,
    Broken,
    /// A `Content-Encoding` other than identity: compressed bodies are not accepted (no bomb).
    Encoded,
}

impl BodyError {
    fn status(&self) -> u16 {
        match self {
            BodyError::TooLarge => 413,
            BodyError::Timeout => 408,
            BodyError::Broken => 400,
            BodyError::Encoded => 415,
        }
    }

    fn message(&self, app: &App) -> String {
        match self {
            BodyError::TooLarge => {
                format!(
                    "the request body is larger than {} bytes",
                    app.config.max_body_bytes
                )
            }
            BodyError::Timeout => "the request body did not arrive in time".to_owned(),
            BodyError::Broken => "the request body could not be read".to_owned(),
            BodyError::Encoded => {
                "compressed request bodies are not accepted; send identity".to_owned()
            }
        }
    }

    fn fault(&self, app: &App, version: SoapVersion) -> Fault {
        Fault::client(version, self.message(app)).with_status(self.status())
    }

    fn json(&self, app: &App) -> JsonReply {
        JsonReply::error(self.status(), 2, &self.message(app))
    }
}

/// How much of an over-cap body is read and thrown away after its 413 is sent, and for how
/// long: a client that writes its whole body before it reads (most do) then gets the 413
/// instead of a connection reset in the middle of its write. Larger bodies are not waited for.
const DRAIN_BYTES: u64 = 8 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads the body, refusing it before reading when Content-Length is over the cap, and after
/// at most the cap when it is not declared. The rest of a refused body is drained in the
/// background (see [`DRAIN_BYTES`]).
async fn read_body(app: &App, request: Request<Incoming>) -> Result<Bytes, BodyError> {
    let encoded = header(&request, "content-encoding")
        .is_some_and(|encoding| !encoding.trim().eq_ignore_ascii_case("identity"));
    if encoded {
        return Err(BodyError::Encoded);
    }
    let cap = app.config.max_body_bytes;
    let declared = header(&request, CONTENT_LENGTH.as_str())
        .and_then(|value| value.trim().parse::<u64>().ok());
    let mut body = request.into_body();
    if declared.is_some_and(|length| length > cap as u64) {
        if declared.is_some_and(|length| length <= DRAIN_BYTES) {
            tokio::spawn(drain(body));
        }
        return Err(BodyError::TooLarge);
    }
    let read = async {
        let mut collected = Vec::with_capacity(declared.map_or(0, |length| length as usize));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| BodyError::Broken)?;
            if let Ok(data) = frame.into_data() {
                if collected.len() + data.len() > cap {
                    return Err(BodyError::TooLarge);
                }
                collected.extend_from_slice(&data);
            }
        }
        Ok(Bytes::from(collected))
    };
    match tokio::time::timeout(app.config.body_read_timeout, read).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Err(BodyError::TooLarge)) => {
            tokio::spawn(drain(body));
            Err(BodyError::TooLarge)
        }
        Ok(outcome) => outcome,
    }
}

/// Reads and discards what is left of a refused body, up to [`DRAIN_BYTES`] or
/// [`DRAIN_TIME`], while its answer goes out; the connection closes when the body is dropped.
async fn drain(mut body: Incoming) {
    let discard = async {
        let mut drained: u64 = 0;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                drained += data.len() as u64;
                if drained > DRAIN_BYTES {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}

/// The `Idempotency-Key` header: printable ASCII, at most 255 bytes.
fn idempotency_key_of(request: &Request<Incoming>) -> Result<Option<String>, String> {
    let Some(value) = request.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| "Idempotency-Key must be printable ASCII".to_owned())?
        .trim();
    if key.is_empty() || key.len() > soap::envelope::MAX_IDEMPOTENCY_KEY {
        return Err(format!(
            "Idempotency-Key must be 1 to {} characters",
            soap::envelope::MAX_IDEMPOTENCY_KEY
        ));
    }
    Ok(Some(key.to_owned()))
}

/// An API key from `X-API-KEY` or `Authorization: Bearer`.
fn api_key_of(request: &Request<Incoming>) -> Option<String> {
    if let Some(key) = header(request, "x-api-key") {
        return Some(key.trim().to_owned());
    }
    let authorization = header(request, "authorization")?;
    let (scheme, key) = authorization.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim().to_owned())
}

fn header<'r>(request: &'r Request<Incoming>, name: &str) -> Option<&'r str> {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
}

/// `--public-url`, or `http://` + the request's Host when it is a plain host[:port].
fn base_url(app: &App, request: &Request<Incoming>) -> String {
    if let Some(public) = &app.config.public_url {
        return public.trim_end_matches('/').to_owned();
    }
    let host = header(request, HOST.as_str())
        .filter(|host| {
            !host.is_empty()
                && host.len() <= 255
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    format!("http://{host}")
}

fn soap_reply(reply: SoapReply) -> Reply {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = plain(status, reply.content_type, reply.body);
    response.extensions_mut().insert(Served {
        face: "soap",
        operation: reply.operation,
        outcome: reply.outcome,
    });
    response
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

fn plain(status: StatusCode, content_type: &'static str, body: String) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    reply
}
