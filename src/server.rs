//! The HTTP server: accept loop, routing by (method, path, gate), body cap, graceful shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
use crate::refunds::throttle::{CLIENT_CONNECTION, ClientConnection};
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
    /// The most bytes of request bodies held at once, over all connections; a body waits (up to
    /// `body_read_timeout`) for its share before it is read, so clients that park unfinished
    /// bodies cannot pin more memory than this.
    pub body_budget_bytes: usize,
    /// The most requests from one client address reading a body before their caller is known
    /// (SOAP and the JSON gate without a valid API key header); more wait for a slot, so one
    /// address cannot take the whole body budget.
    pub max_anonymous_bodies_per_address: usize,
    /// The part of the body budget that bodies whose caller is not known yet may hold, so that
    /// callers known from their headers (an API key) always find room.
    pub anonymous_body_budget_bytes: usize,
    /// The most open connections from one client address on which no caller has
    /// authenticated yet; more are closed as they are accepted.
    pub max_unauthenticated_connections_per_address: usize,
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
    /// How refund events reach the shop's webhook endpoints.
    pub webhooks: crate::webhooks::WebhookConfig,
    /// `/metrics` answers only requests with `Authorization: Bearer {token}`; without a token it
    /// is off (404): refund counts and the outbox depth are the shop's business.
    pub metrics_token: Option<MetricsToken>,
}

/// The token a scraper sends for `/metrics`; never printed.
#[derive(Clone)]
pub struct MetricsToken(pub String);

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(…)")
    }
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
            body_budget_bytes: 64 * 1024 * 1024,
            max_anonymous_bodies_per_address: 16,
            anonymous_body_budget_bytes: 32 * 1024 * 1024,
            max_unauthenticated_connections_per_address: 256,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            operators: OperatorsConfig::default(),
            run_outbox: true,
            webhooks: crate::webhooks::WebhookConfig::default(),
            metrics_token: None,
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

/// Counts one fewer unauthenticated connection from `address`.
fn release_unauthenticated(counts: &std::sync::Mutex<HashMap<IpAddr, usize>>, address: IpAddr) {
    if let Ok(mut counts) = counts.lock()
        && let Some(count) = counts.get_mut(&address)
    {
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(&address);
        }
    }
}

/// Slots per client address for requests reading a body before their caller is known. An
/// address's entry stays while in use and is swept every few seconds once idle, so that a
/// request costs one short lock and no allocation.
struct AddressSlots {
    per_address: usize,
    slots: std::sync::Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
}

impl AddressSlots {
    fn new(per_address: usize) -> AddressSlots {
        AddressSlots {
            per_address,
            slots: std::sync::Mutex::default(),
        }
    }

    async fn take(&self, address: IpAddr) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let semaphore = {
            let mut slots = self.slots.lock().ok()?;
            slots
                .entry(address)
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_address)))
                .clone()
        };
        semaphore.acquire_owned().await.ok()
    }

    /// Forgets the addresses nobody holds or waits for a slot of.
    fn sweep(&self) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.retain(|_, semaphore| Arc::strong_count(semaphore) > 1);
        }
    }
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
    let metrics = Arc::new(Metrics::new());
    let (stop_webhooks, webhooks_stopped) = tokio::sync::oneshot::channel::<()>();
    let webhooks = tokio::spawn(crate::webhooks::run(
        service.clone(),
        config.webhooks,
        metrics.clone(),
        async {
            let _ = webhooks_stopped.await;
        },
    ));
    let housekeeping = tokio::spawn(housekeeping(service.clone()));
    let sealer = (service.audit_sealing() == AuditSealing::ByLeader)
        .then(|| tokio::spawn(seal_audit(service.clone())));
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let app = Arc::new(App {
        service,
        panel: crate::admin::Panel::new(),
        metrics,
        operators,
        body_budget: Arc::new(Semaphore::new(config.body_budget_bytes)),
        body_bytes_peak: AtomicUsize::new(0),
        anonymous_bodies: AddressSlots::new(config.max_anonymous_bodies_per_address),
        anonymous_body_budget: Arc::new(Semaphore::new(config.anonymous_body_budget_bytes)),
        unauthenticated_connections: Arc::default(),
        config,
        next_request_id: AtomicU64::new(1),
    });
    let trimming = tokio::spawn(hand_back_memory(app.clone()));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(app.config.header_read_timeout);

    tokio::pin!(shutdown);
    let files_lost = store.stopped_for_good();
    tokio::pin!(files_lost);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.context("connection limiter closed")?,
            () = &mut shutdown => break,
            () = &mut files_lost => break,
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
            () = &mut files_lost => break,
        };
        let address = peer.ip();
        let admitted = app
            .unauthenticated_connections
            .lock()
            .is_ok_and(|mut counts| {
                let count = counts.entry(address).or_insert(0);
                let admitted = *count < app.config.max_unauthenticated_connections_per_address;
                *count += usize::from(admitted);
                admitted
            });
        if !admitted {
            tracing::debug!(%peer, "too many unauthenticated connections from this address; closed");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let counts = app.unauthenticated_connections.clone();
        let client = Arc::new(ClientConnection::new(
            address,
            Box::new(move || release_unauthenticated(&counts, address)),
        ));
        let counts_at_close = app.unauthenticated_connections.clone();
        let app = app.clone();
        let on_connection = client.clone();
        let service = hyper::service::service_fn(move |request| {
            let app = app.clone();
            // The service counts failed authentications per client address and reports the
            // first success on the connection (see `refunds::throttle`).
            let served = CLIENT_CONNECTION.scope(on_connection.clone(), serve(app, request, peer));
            async move { Ok::<_, std::convert::Infallible>(served.await) }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            if !client.is_authenticated() {
                release_unauthenticated(&counts_at_close, address);
            }
            drop(permit);
        });
    }

    tracing::info!("shutting down: finishing open requests");
    housekeeping.abort();
    if let Some(sealer) = sealer {
        sealer.abort();
    }
    trimming.abort();
    let _ = stop_worker.send(());
    if let Some(worker) = worker {
        let _ = worker.await;
    }
    let _ = stop_webhooks.send(());
    let _ = webhooks.await;
    if tokio::time::timeout(app.config.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open after the grace period");
    }
    let closing = store.clone();
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .context("closing the store")?;
    // A supervisor restarts a process that exits with an error into a clear state.
    store
        .check_usable()
        .context("the service stopped because the ledger's files changed under it")
}

/// Sweeps idle per-address slots; after a burst of large bodies, hands the freed memory back
/// to the system: glibc keeps up to
/// 64 MiB of free heap (see [`tune_allocator`]), which after a burst of parked bodies would stay
/// resident. Checked every five seconds; trims only when more than 8 MiB of bodies were held
/// since the last trim and few are held now.
async fn hand_back_memory(app: Arc<App>) {
    const BURST: usize = 8 * 1024 * 1024;
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        app.anonymous_bodies.sweep();
        let held = app.config.body_budget_bytes - app.body_budget.available_permits();
        if app.body_bytes_peak.load(Ordering::Relaxed) > BURST && held < BURST {
            app.body_bytes_peak.store(held, Ordering::Relaxed);
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            let _ = tokio::task::spawn_blocking(|| {
                // SAFETY: malloc_trim takes the allocator's locks itself.
                unsafe { libc::malloc_trim(0) }
            })
            .await;
        }
    }
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
    OpenApi {
        version: u32,
    },
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
    if let Some(rest) = path.strip_prefix("/api/doc/admin/") {
        let version = rest.strip_suffix("/json").and_then(rest::version);
        return match (version, method) {
            (Some(version), &Method::GET) => Route::OpenApi { version },
            (Some(_), _) => Route::MethodNotAllowed("GET"),
            (None, _) => Route::JsonNotFound,
        };
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
        "/healthz" => Route::Health,
        "/readyz" => Route::Ready,
        "/metrics" => Route::Metrics,
        _ => Route::NotFound,
    }
}

/// `v{N}/refunds/{operation}` with N one of `rest::VERSIONS`, spelled canonically.
fn rest_operation(path: &str) -> Option<&str> {
    let (version, rest) = path.split_once('/')?;
    rest::version(version)?;
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
        Route::OpenApi { version } => plain(StatusCode::OK, JSON, rest::openapi(version)),
        Route::Metrics if !metrics_allowed(app, &request) => {
            let status = if app.config.metrics_token.is_some() {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::NOT_FOUND
            };
            plain(
                status,
                "text/plain; charset=utf-8",
                "metrics need the token serve was started with (--metrics-token), as \
                 Authorization: Bearer\n"
                    .to_owned(),
            )
        }
        Route::Metrics => match app.service.counts().await {
            Ok(counts) => plain(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                app.metrics.render(&counts, crate::clock::system_millis()),
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
        Route::JsonNotFound => json_reply(JsonReply::error(404, 2, rest::unknown_path_message())),
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

/// Whether the request carries the metrics token (compared in a time that depends only on
/// the lengths).
fn metrics_allowed(app: &App, request: &Request<Incoming>) -> bool {
    let Some(MetricsToken(token)) = &app.config.metrics_token else {
        return false;
    };
    let Some(presented) = header(request, "authorization")
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, presented)| presented.trim())
    else {
        return false;
    };
    presented.len() == token.len()
        && presented
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
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
    let parts = match call_parts(app, request, true).await {
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
        body: &parts.body.bytes,
    };
    json_reply(rest::handle_rest(&app.service, call).await)
}

async fn gate_request(
    app: &App,
    request: Request<Incoming>,
    operation: &str,
    request_id: Option<String>,
) -> Reply {
    let parts = match call_parts(app, request, false).await {
        Ok(parts) => parts,
        Err(error) => return json_reply(error.json(app)),
    };
    let call = rest::GateCall {
        operation,
        api_key: parts.api_key,
        idempotency_key: parts.idempotency_key,
        request_id,
        body: &parts.body.bytes,
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
    if let Some(value) = reply
        .x_error
        .and_then(|message| HeaderValue::try_from(message).ok())
    {
        response.headers_mut().insert("x-error", value);
    }
    response
}

/// `POST /operators/{name}/callback`: an operator's asynchronous result, signed. Every outcome
/// is counted in the metrics.
async fn callback_request(app: &App, request: Request<Incoming>, name: &str) -> Reply {
    let (outcome, reply) = callback_outcome(app, request, name).await;
    app.metrics.callback(outcome);
    reply
}

async fn callback_outcome(
    app: &App,
    request: Request<Incoming>,
    name: &str,
) -> (&'static str, Reply) {
    let signature = header(&request, "x-signature").map(str::to_owned);
    // Operators sign their callbacks in the body, so the caller is not known before it.
    let held = match read_body_held(app, request, false).await {
        Ok(held) => held,
        Err(error) => return ("refused", json_reply(error.json(app))),
    };
    let body = &held.bytes;
    let answer = |status: u16, message: &str| {
        let body = serde_json::json!({ "status": status, "message": message }).to_string();
        plain(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            JSON,
            body,
        )
    };
    let Some(operator) = app.operators.get(name) else {
        return ("unknown", answer(404, "no such operator"));
    };
    if !operator.verify_callback(body, signature.as_deref()) {
        tracing::warn!(operator = name, "callback with a bad signature refused");
        return ("refused", answer(401, "bad signature"));
    }
    let message: OperatorMessage = match serde_json::from_slice(body) {
        Ok(message) => message,
        Err(_) => return ("refused", answer(400, "the body is not a callback message")),
    };
    let Some(refund_id) = message.refund_id else {
        return ("refused", answer(400, "refundId is missing"));
    };
    let stated = message.stated_amount();
    match app
        .service
        .operator_callback(name, refund_id, message.answer(), stated.clone())
        .await
    {
        Ok(Some(CallbackOutcome::Settled)) => ("settled", answer(200, "settled")),
        Ok(Some(CallbackOutcome::Ignored)) => {
            ("ignored", answer(200, "ignored: nothing to change"))
        }
        Ok(Some(CallbackOutcome::Mismatch { expected })) => {
            tracing::warn!(
                operator = name,
                refund_id,
                stated_amount = ?stated.value,
                stated_currency = ?stated.currency,
                expected_amount = %expected.to_decimal(),
                expected_currency = expected.currency.code(),
                "callback for another amount or currency refused; the refund waits for its status query"
            );
            (
                "mismatch",
                answer(
                    409,
                    "amount and currency must be the refund's; nothing was settled",
                ),
            )
        }
        Ok(None) => ("unknown", answer(404, "no such refund for this operator")),
        Err(error) => {
            tracing::error!(error = error.log_text(), "callback failed");
            (
                "failed",
                answer(500, "the gateway failed; the cause is in its log"),
            )
        }
    }
}

async fn soap_request(app: &App, request: Request<Incoming>, request_id: Option<String>) -> Reply {
    let content_type = header(&request, CONTENT_TYPE.as_str()).map(str::to_owned);
    let version = SoapVersion::from_content_type(content_type.as_deref());
    let parts = match call_parts(app, request, false).await {
        Ok(parts) => parts,
        Err(error) => return soap_reply(SoapReply::fault(&error.fault(app, version))),
    };
    let call = soap::SoapCall {
        body: &parts.body.bytes,
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
    body: HeldBody,
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

/// Reads a call's parts. A body is read only within the body budget, and for a caller not
/// known from the headers (no valid API key) also within its address's slots; with
/// `key_required` (REST, where only a header key authenticates) a body without a valid key is
/// not read at all: the call is answered 401 from its headers.
async fn call_parts(
    app: &App,
    request: Request<Incoming>,
    key_required: bool,
) -> Result<CallParts, PartsError> {
    let api_key = api_key_of(&request);
    let idempotency_key = idempotency_key_of(&request).map_err(PartsError::IdempotencyKey)?;
    // Reads (no body) skip the check: the call authenticates anyway, and nothing is held.
    let caller_known = match &api_key {
        _ if !has_body(&request) => true,
        Some(key) => app.service.knows_api_key(key).await,
        None => false,
    };
    if key_required && !caller_known {
        return Ok(CallParts {
            api_key,
            idempotency_key,
            body: HeldBody {
                bytes: Bytes::new(),
                _budget: None,
            },
        });
    }
    let body = read_body_held(app, request, caller_known)
        .await
        .map_err(PartsError::Body)?;
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

/// Whether a request comes with a body to read: not a GET or HEAD, nor a declared empty one.
fn has_body(request: &Request<Incoming>) -> bool {
    let method = request.method();
    method != Method::GET
        && method != Method::HEAD
        && header(request, CONTENT_LENGTH.as_str()).map(str::trim) != Some("0")
}

/// A request body and its share of the body budget, handed back when both are dropped.
struct HeldBody {
    bytes: Bytes,
    _budget: Option<BodyShare>,
}

/// Bytes taken from the body budget, and for an anonymous body also from its part of it.
struct BodyShare {
    total: tokio::sync::OwnedSemaphorePermit,
    anonymous: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl BodyShare {
    /// Takes `bytes` (waiting while they are spent): from the anonymous part first, then from
    /// the whole, always in that order, so that waiters never hold what the other waits for.
    async fn take(app: &App, bytes: u32, anonymous: bool) -> Result<BodyShare, BodyError> {
        let anonymous = match anonymous {
            true => Some(
                app.anonymous_body_budget
                    .clone()
                    .acquire_many_owned(bytes)
                    .await
                    .map_err(|_| BodyError::Broken)?,
            ),
            false => None,
        };
        let total = app
            .body_budget
            .clone()
            .acquire_many_owned(bytes)
            .await
            .map_err(|_| BodyError::Broken)?;
        Ok(BodyShare { total, anonymous })
    }

    async fn grow(&mut self, app: &App, bytes: u32) -> Result<(), BodyError> {
        let more = BodyShare::take(app, bytes, self.anonymous.is_some()).await?;
        self.total.merge(more.total);
        if let (Some(held), Some(more)) = (self.anonymous.as_mut(), more.anonymous) {
            held.merge(more);
        }
        Ok(())
    }
}

/// Reads the body within the body budget (see [`Config::body_budget_bytes`]): its share is
/// taken before reading (the declared length, or each frame's as it comes), waiting while the
/// budget is spent, and the whole wait and read are bounded by the body timeout. A body whose
/// caller is not known yet also waits for one of its address's slots
/// ([`Config::max_anonymous_bodies_per_address`]).
async fn read_body_held(
    app: &App,
    request: Request<Incoming>,
    caller_known: bool,
) -> Result<HeldBody, BodyError> {
    let declared = header(&request, CONTENT_LENGTH.as_str())
        .and_then(|value| value.trim().parse::<u64>().ok());
    let refused_unread = declared.is_some_and(|length| length > app.config.max_body_bytes as u64)
        || header(&request, "content-encoding")
            .is_some_and(|encoding| !encoding.trim().eq_ignore_ascii_case("identity"));
    if !has_body(&request) || refused_unread {
        // Nothing to hold: no body, or one refused before it is read.
        return Ok(HeldBody {
            bytes: read_body_within(app, request, None, app.config.body_read_timeout).await?,
            _budget: None,
        });
    }
    let address = (!caller_known)
        .then(crate::refunds::throttle::client_address)
        .flatten();
    let wait = async {
        let slot = match address {
            Some(address) => Some(
                app.anonymous_bodies
                    .take(address)
                    .await
                    .ok_or(BodyError::Broken)?,
            ),
            None => None,
        };
        // A declared length is taken whole (it is at most the cap); else one frame at a time.
        let upfront = declared
            .filter(|&length| length <= app.config.max_body_bytes as u64)
            .map_or(0, |length| length as u32);
        let held = BodyShare::take(app, upfront, !caller_known).await?;
        Ok::<_, BodyError>((slot, held))
    };
    let started = Instant::now();
    let (slot, mut held) = tokio::time::timeout(app.config.body_read_timeout, wait)
        .await
        .map_err(|_| BodyError::Timeout)??;
    let in_use = app.config.body_budget_bytes - app.body_budget.available_permits();
    app.body_bytes_peak.fetch_max(in_use, Ordering::Relaxed);
    let undeclared = declared.is_none().then_some(&mut held);
    let left = app
        .config
        .body_read_timeout
        .saturating_sub(started.elapsed());
    let bytes = read_body_within(app, request, undeclared, left).await;
    drop(slot);
    Ok(HeldBody {
        bytes: bytes?,
        _budget: Some(held),
    })
}

/// Reads the body within `timeout`, refusing it before reading when Content-Length is over the
/// cap, and after at most the cap when it is not declared; when not declared, each frame's
/// share of the budget is taken into `undeclared` first. The rest of a refused body is
/// drained in the background (see [`DRAIN_BYTES`]).
async fn read_body_within(
    app: &App,
    request: Request<Incoming>,
    mut undeclared: Option<&mut BodyShare>,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
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
                if let Some(held) = undeclared.as_mut() {
                    held.grow(app, data.len() as u32).await?;
                }
                collected.extend_from_slice(&data);
            }
        }
        Ok(Bytes::from(collected))
    };
    match tokio::time::timeout(timeout, read).await {
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

fn plain(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut reply = Response::new(Full::new(body.into()));
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    reply
}
