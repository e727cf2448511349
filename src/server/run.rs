//! Wiring and the accept loop: builds the service and its workers, admits connections
//! (bounded, per-address cap on unauthenticated ones), and shuts down gracefully.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::refunds::ledger::{AuditSealing, LedgerStore};
use crate::refunds::throttle::{CLIENT_CONNECTION, ClientConnection};
use crate::refunds::{Policy, RefundService};
use crate::store;

use super::body::AddressSlots;
use super::memory::hand_back_memory;
use super::tasks::{housekeeping, seal_audit};
use super::{App, Config, serve};

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
