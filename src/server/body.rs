//! Reading a call's parts: request bodies within the body cap, the body budget and the
//! per-address slots for bodies whose caller is not known yet; over-cap bodies drained.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::{Method, Request};
use tokio::sync::Semaphore;

use crate::rest::JsonReply;
use crate::soap::envelope::SoapVersion;
use crate::soap::fault::Fault;

use super::App;
use super::headers::{api_key_of, header, idempotency_key_of};

/// Slots per client address for requests reading a body before their caller is known. An
/// address's entry stays while in use and is swept every few seconds once idle, so that a
/// request costs one short lock and no allocation.
pub(super) struct AddressSlots {
    per_address: usize,
    slots: std::sync::Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
}

impl AddressSlots {
    pub(super) fn new(per_address: usize) -> AddressSlots {
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
    pub(super) fn sweep(&self) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.retain(|_, semaphore| Arc::strong_count(semaphore) > 1);
        }
    }
}

/// What every face takes from a call's request besides its path: the API key, the
/// idempotency key and the body.
pub(super) struct CallParts {
    pub(super) api_key: Option<String>,
    pub(super) idempotency_key: Option<String>,
    pub(super) body: HeldBody,
}

/// Why a request's [`CallParts`] could not be read.
pub(super) enum PartsError {
    /// A malformed `Idempotency-Key` header.
    IdempotencyKey(String),
    Body(BodyError),
}

impl PartsError {
    pub(super) fn fault(&self, app: &App, version: SoapVersion) -> Fault {
        match self {
            PartsError::IdempotencyKey(message) => Fault::client(version, message.clone()),
            PartsError::Body(error) => error.fault(app, version),
        }
    }

    pub(super) fn json(&self, app: &App) -> JsonReply {
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
pub(super) async fn call_parts(
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

pub(super) enum BodyError {
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

    pub(super) fn json(&self, app: &App) -> JsonReply {
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
pub(super) struct HeldBody {
    pub(super) bytes: Bytes,
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

/// Reads the body within the body budget (see [`super::Config::body_budget_bytes`]): its share is
/// taken before reading (the declared length, or each frame's as it comes), waiting while the
/// budget is spent, and the whole wait and read are bounded by the body timeout. A body whose
/// caller is not known yet also waits for one of its address's slots
/// ([`super::Config::max_anonymous_bodies_per_address`]).
pub(super) async fn read_body_held(
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
