//! The admin panel under `/admin`: server-rendered HTML forms over the same operations the API
//! faces call.
//!
//! Every page is an askama template (`templates/admin/`, checked at compile time, escaping every
//! value). Every control is a real form: an action is a POST that runs one operation through the
//! registry (`crate::operations::call`, channel "admin", the panel user as caller, the form's
//! token as its idempotency key) and redirects to a GET that shows the stored answer
//! (POST → redirect → GET). No script is served; the Content-Security-Policy forbids any.
//!
//! Security: a session cookie (`__Host-`, `Secure; HttpOnly; SameSite=Strict`), a CSRF token
//! on every form, and `Sec-Fetch-Site`/`Origin` checks on every POST (see [`cross_site`]).
//! The panel reaches the ledger only through `RefundService`; it never runs SQL.

mod pages;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, LOCATION, SET_COOKIE};
use hyper::{Method, Request, Response, StatusCode};

use crate::metrics::{Outcome, Served};
use crate::operations::{
    self, AddAutomaticRefundForOrderOp, AddAutomaticRefundOp, AddManualRefundOp, CallContext,
    CancelRefundOp, ConfirmRefundOp, Operation, Params, RetrieveRefundsListOp, Scalar,
    UpdateRefundOp,
};
use crate::refunds::panel::{DayCounts, PanelSession, SignInError};
use crate::refunds::types::{SourceRef, SourceType};
use crate::refunds::{
    Answer, Channel, Credentials, OperationKind, Origin, RefundError, RefundService, RefundsPage,
    StoredResponse,
};

type Reply = Response<Full<Bytes>>;

/// The session cookie. `__Host-` makes the browser keep it only when set `Secure`, with
/// `Path=/` and no `Domain`, so no other host or path can plant or read it.
const SESSION_COOKIE: &str = "__Host-refunds-panel";

/// The Content-Security-Policy of every panel answer: nothing but our own style sheet, forms
/// that post only to us, no framing, and violations reported to us.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'; report-uri /admin/csp-report";

/// Panel forms are small; anything larger is refused unread.
const MAX_FORM_BYTES: usize = 64 * 1024;
const FORM_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Rows per page of the list.
pub const LIST_PAGE_SIZE: u32 = 50;

/// The panel's state in a running server: CSP violation reports received, and the chart.
#[derive(Debug, Default)]
pub struct Panel {
    csp_reports: AtomicU64,
    chart: tokio::sync::Mutex<Option<CachedChart>>,
}

/// How long the chart of the list page is reused. Counting refunds per day walks every refund
/// added in 30 days (about 50 ms for 110 000 of them, see BENCHMARKS.md), far more than the rest
/// of the page; a chart of days need not be fresher than a minute.
const CHART_MAX_AGE: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct CachedChart {
    made: std::time::Instant,
    days: Arc<Vec<DayCounts>>,
}

/// What a panel request brings besides its method and path.
pub struct PanelRequest {
    pub request: Request<Incoming>,
    pub peer: SocketAddr,
    pub request_id: u64,
}

impl Panel {
    pub fn new() -> Panel {
        Panel::default()
    }

    /// Answers one request under `/admin`.
    pub async fn handle(&self, service: &RefundService, incoming: PanelRequest) -> Reply {
        let mut reply = self.route(service, incoming).await;
        secure(&mut reply);
        let outcome = match reply.status().as_u16() {
            200..=399 => Outcome::Ok,
            500..=599 => Outcome::Failed,
            _ => Outcome::Rejected,
        };
        reply.extensions_mut().insert(Served {
            face: "admin",
            operation: None,
            outcome,
        });
        reply
    }

    async fn route(&self, service: &RefundService, incoming: PanelRequest) -> Reply {
        let request = &incoming.request;
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        let query = request.uri().query().unwrap_or("").to_owned();
        // A POST from another site is refused before anything else is looked at (CSP reports
        // come from our own pages).
        if method == Method::POST
            && path != "/admin/csp-report"
            && let Some(refused) = cross_site(request)
        {
            return refused;
        }
        match (&method, path.as_str()) {
            (&Method::GET, "/admin/static/panel.css") => {
                let mut reply = text(StatusCode::OK, pages::STYLE_SHEET.to_owned());
                reply.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/css; charset=utf-8"),
                );
                return reply;
            }
            (&Method::POST, "/admin/csp-report") => {
                let body = read_form(incoming.request).await.unwrap_or_default();
                self.csp_reports.fetch_add(1, Ordering::Relaxed);
                let shown = String::from_utf8_lossy(&body[..body.len().min(2048)]).into_owned();
                tracing::warn!(report = %shown, "content security policy violation reported");
                return text(StatusCode::NO_CONTENT, String::new());
            }
            // How many violations were reported since start (monitoring; the browser test).
            (&Method::GET, "/admin/csp-report") => {
                return text(
                    StatusCode::OK,
                    format!("{}\n", self.csp_reports.load(Ordering::Relaxed)),
                );
            }
            (&Method::GET, "/admin/login") => {
                return pages::login("", None, StatusCode::OK);
            }
            (&Method::POST, "/admin/login") => {
                let address = incoming.peer.ip().to_string();
                return sign_in(service, incoming.request, &address).await;
            }
            _ => {}
        }
        let request_id = Some(incoming.request_id.to_string());
        let Some(session_id) = session_cookie(request) else {
            return redirect("/admin/login");
        };
        let session = match service.panel_session(&session_id, request_id.clone()).await {
            Ok(session) => session,
            Err(RefundError::Unauthenticated) => return redirect("/admin/login"),
            Err(error) => return failed(&error),
        };
        if method == Method::POST {
            let body = match read_form(incoming.request).await {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            let form = FormParams::parse(&body);
            if !csrf_matches(form.text("csrf"), &session.csrf_token) {
                tracing::warn!("panel form without a valid CSRF token refused");
                return pages::message(
                    &session,
                    StatusCode::FORBIDDEN,
                    "Refused",
                    "This form has expired or did not come from this panel. Reload the page and try again.",
                    "/admin",
                );
            }
            if path == "/admin/logout" {
                return sign_out(service, &session_id).await;
            }
            if let Some(operation) = path.strip_prefix("/admin/actions/") {
                return act(service, &session, &session_id, operation, &form, request_id).await;
            }
            return not_found(&session);
        }
        if method != Method::GET && method != Method::HEAD {
            let mut reply = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "use GET or POST\n".to_owned(),
            );
            reply
                .headers_mut()
                .insert("allow", HeaderValue::from_static("GET, HEAD, POST"));
            return reply;
        }
        let query = QueryParams::parse(&query);
        let result = match query.get("result") {
            Some(token) => service
                .panel_answer(&session.caller, token)
                .await
                .ok()
                .flatten(),
            None => None,
        };
        let outcome = result.as_ref().map(ActionOutcome::from_stored);
        match path.as_str() {
            "/admin" | "/admin/" => {
                let chart = match self.chart(service).await {
                    Ok(chart) => chart,
                    Err(error) => return failed(&error),
                };
                list(service, &session, &session_id, &query, outcome, &chart).await
            }
            "/admin/search" => search(service, &session, &query).await,
            _ => {
                if let Some((source_type, id)) = source_path(&path) {
                    return source_page(service, &session, SourceRef { source_type, id }, outcome)
                        .await;
                }
                if let Some(id) = path
                    .strip_prefix("/admin/refunds/")
                    .and_then(|id| id.parse::<i64>().ok())
                {
                    return match service.refund_history(id).await {
                        Ok(Some(history)) => pages::refund(&session, &history, service.timezone()),
                        Ok(None) => not_found(&session),
                        Err(error) => failed(&error),
                    };
                }
                not_found(&session)
            }
        }
    }
}

impl Panel {
    /// The refunds per day of the last 30 days, at most [`CHART_MAX_AGE`] old. One request
    /// counts while the others wait for its answer, so a busy panel counts once a minute.
    async fn chart(&self, service: &RefundService) -> Result<Arc<Vec<DayCounts>>, RefundError> {
        let mut cached = self.chart.lock().await;
        if let Some(chart) = cached.as_ref()
            && chart.made.elapsed() < CHART_MAX_AGE
        {
            return Ok(chart.days.clone());
        }
        let days = Arc::new(service.refunds_per_day(30).await?);
        *cached = Some(CachedChart {
            made: std::time::Instant::now(),
            days: days.clone(),
        });
        Ok(days)
    }
}

/// The security headers of every panel answer.
fn secure(reply: &mut Reply) {
    let headers = reply.headers_mut();
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Refuses a POST that a browser says came from another site, or whose `Origin` is not this
/// host. Browsers send `Sec-Fetch-Site` (and `Origin`) on every cross-origin POST, so a form on
/// another origin is refused here even before its missing CSRF token is noticed. A client that
/// sends neither header (not a browser) still needs the session cookie and the CSRF token.
fn cross_site(request: &Request<Incoming>) -> Option<Reply> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    let refused = match header("sec-fetch-site") {
        Some(site) => site != "same-origin",
        None => match (header("origin"), header("host")) {
            (Some(origin), Some(host)) => {
                let origin = origin
                    .strip_prefix("http://")
                    .or_else(|| origin.strip_prefix("https://"));
                origin != Some(host)
            }
            (Some(_), None) => true,
            (None, _) => false,
        },
    };
    refused.then(|| {
        tracing::warn!(
            sec_fetch_site = header("sec-fetch-site").unwrap_or("-"),
            origin = header("origin").unwrap_or("-"),
            "cross-site panel request refused"
        );
        text(
            StatusCode::FORBIDDEN,
            "refused: this form was not sent from the panel's own pages\n".to_owned(),
        )
    })
}

fn csrf_matches(presented: Option<&str>, expected: &str) -> bool {
    let Some(presented) = presented else {
        return false;
    };
    // Constant time over the token's length, so a guess learns nothing from the timing.
    presented.len() == expected.len()
        && presented
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

fn session_cookie(request: &Request<Incoming>) -> Option<String> {
    request
        .headers()
        .get_all("cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|value| !value.is_empty() && value.len() <= 64)
}

async fn sign_in(service: &RefundService, request: Request<Incoming>, address: &str) -> Reply {
    let body = match read_form(request).await {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let form = FormParams::parse(&body);
    let login = form.text("login").unwrap_or("").trim().to_owned();
    let password = form.text("password").unwrap_or("");
    match service.sign_in(&login, password, address).await {
        Ok(signed_in) => {
            let mut reply = redirect("/admin");
            let cookie = format!(
                "{SESSION_COOKIE}={}; Secure; HttpOnly; SameSite=Strict; Path=/",
                signed_in.session_id
            );
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                reply.headers_mut().insert(SET_COOKIE, value);
            }
            tracing::info!(login = %login, "panel user signed in");
            reply
        }
        Err(SignInError::WrongCredentials) => {
            tracing::info!(login = %login, "panel sign-in failed");
            pages::login(
                &login,
                Some("The login or the password is wrong."),
                StatusCode::UNAUTHORIZED,
            )
        }
        Err(SignInError::Throttled) => {
            tracing::warn!(login = %login, %address, "panel sign-in throttled");
            pages::login(
                &login,
                Some("Too many failed sign-ins. Wait 15 minutes and try again."),
                StatusCode::TOO_MANY_REQUESTS,
            )
        }
        Err(SignInError::Failed(error)) => failed(&error),
    }
}

async fn sign_out(service: &RefundService, session_id: &str) -> Reply {
    if let Err(error) = service.sign_out(session_id).await {
        return failed(&error);
    }
    let mut reply = redirect("/admin/login");
    let cookie = format!("{SESSION_COOKIE}=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        reply.headers_mut().insert(SET_COOKIE, value);
    }
    reply
}

/// What a panel action's answer says, as stored under its form token: which refund it concerns
/// and the message the API gives (`faultString`), or what was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionOutcome {
    pub refund_id: Option<i64>,
    pub ok: bool,
    pub message: String,
}

impl ActionOutcome {
    /// The stored form: status 200 or 422, body `{refund id or -}\n{message}`.
    fn to_stored(&self) -> StoredResponse {
        let id = self
            .refund_id
            .map_or_else(|| "-".to_owned(), |id| id.to_string());
        StoredResponse {
            status: if self.ok { 200 } else { 422 },
            content_type: "text/plain; charset=utf-8".to_owned(),
            body: format!("{id}\n{}", self.message).into_bytes(),
        }
    }

    fn from_stored(stored: &StoredResponse) -> ActionOutcome {
        let text = String::from_utf8_lossy(&stored.body);
        let (id, message) = text.split_once('\n').unwrap_or(("-", &text));
        ActionOutcome {
            refund_id: id.parse().ok(),
            ok: stored.status == 200,
            message: message.to_owned(),
        }
    }
}

/// How a panel action describes its success.
trait Done {
    fn done(&self, operation: &str, refund_id: Option<i64>) -> (Option<i64>, String);
}

impl Done for i64 {
    fn done(&self, _operation: &str, _refund_id: Option<i64>) -> (Option<i64>, String) {
        (Some(*self), format!("Refund {self} added."))
    }
}

impl Done for bool {
    fn done(&self, operation: &str, refund_id: Option<i64>) -> (Option<i64>, String) {
        let id = refund_id.unwrap_or_default();
        let what = match operation {
            ConfirmRefundOp::NAME => format!("Refund {id} confirmed."),
            CancelRefundOp::NAME => format!("Refund {id} canceled."),
            UpdateRefundOp::NAME => format!("Amount of refund {id} changed."),
            _ => format!("Refund {id} changed."),
        };
        (refund_id, what)
    }
}

fn outcome_of<T: Done>(
    operation: &'static str,
    kind: OperationKind,
    refund_id: Option<i64>,
    outcome: &Result<T, RefundError>,
) -> ActionOutcome {
    match outcome {
        Ok(done) => {
            let (refund_id, message) = done.done(operation, refund_id);
            ActionOutcome {
                refund_id,
                ok: true,
                message,
            }
        }
        Err(error) => ActionOutcome {
            refund_id,
            ok: false,
            message: format!(
                "{} (faultCode {})",
                error.public_message(),
                error.fault_code(kind)
            ),
        },
    }
}

/// `POST /admin/actions/{operation}`: one write operation through the registry, then back to
/// the page the form was on, which shows the stored answer.
async fn act(
    service: &RefundService,
    session: &PanelSession,
    session_id: &str,
    operation: &str,
    form: &FormParams,
    request_id: Option<String>,
) -> Reply {
    let back = form
        .text("back")
        .filter(|back| is_panel_path(back))
        .unwrap_or("/admin")
        .to_owned();
    let Some(token) = form
        .text("formToken")
        .filter(|token| !token.is_empty() && token.len() <= 64)
        .map(str::to_owned)
    else {
        return pages::message(
            session,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Not done",
            "The form is incomplete. Reload the page and try again.",
            &back,
        );
    };
    let refund_id = form.text("paymentId").and_then(|id| id.parse().ok());
    let credentials = Some(Credentials::PanelSession(session_id.to_owned()));
    let origin = Origin {
        channel: Channel::Admin,
        request_id,
    };
    let fresh = match operation {
        AddAutomaticRefundOp::NAME => {
            run::<AddAutomaticRefundOp>(service, credentials, form, origin, &token, refund_id).await
        }
        AddAutomaticRefundForOrderOp::NAME => {
            // Its `paymentId` is the payment refunded, not a refund.
            run::<AddAutomaticRefundForOrderOp>(service, credentials, form, origin, &token, None)
                .await
        }
        AddManualRefundOp::NAME => {
            run::<AddManualRefundOp>(service, credentials, form, origin, &token, None).await
        }
        UpdateRefundOp::NAME => {
            run::<UpdateRefundOp>(service, credentials, form, origin, &token, refund_id).await
        }
        ConfirmRefundOp::NAME => {
            run::<ConfirmRefundOp>(service, credentials, form, origin, &token, refund_id).await
        }
        CancelRefundOp::NAME => {
            run::<CancelRefundOp>(service, credentials, form, origin, &token, refund_id).await
        }
        _ => return not_found(session),
    };
    // An answer stored under the form token (done, a business error, or a replay of either) is
    // shown by the page after the redirect, and a reload of that page shows it again harmlessly.
    // What was refused before the operation ran (no scope, malformed fields, a reused token) or
    // failed inside was not stored, so it is shown now.
    let stored = match &fresh {
        None => true,
        Some(_) => matches!(
            service.panel_answer(&session.caller, &token).await,
            Ok(Some(_))
        ),
    };
    match fresh {
        _ if stored => redirect(&with_result(&back, &token)),
        None => redirect(&with_result(&back, &token)),
        Some(Err(RefundError::Unauthenticated)) => redirect("/admin/login"),
        Some(Err(error)) => {
            let status = match error {
                RefundError::Forbidden(_) => StatusCode::FORBIDDEN,
                RefundError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let message =
                outcome_of::<bool>("", OperationKind::Other, refund_id, &Err(error)).message;
            pages::message(session, status, "Not done", &message, &back)
        }
        Some(Ok(outcome)) => {
            pages::message(session, StatusCode::OK, "Done", &outcome.message, &back)
        }
    }
}

/// Runs one operation for the panel under the idempotency key `token`: `None` for a replayed
/// answer, else the fresh outcome.
async fn run<Op>(
    service: &RefundService,
    credentials: Option<Credentials>,
    form: &FormParams,
    origin: Origin,
    token: &str,
    refund_id: Option<i64>,
) -> Option<Result<ActionOutcome, RefundError>>
where
    Op: Operation,
    Op::Response: Done,
{
    let context = CallContext {
        origin,
        idempotency_key: Some(token.to_owned()),
        dialect: "panel",
        render: Box::new(move |outcome: &Result<Op::Response, RefundError>| {
            outcome_of(Op::NAME, Op::KIND, refund_id, outcome).to_stored()
        }),
    };
    match operations::call::<Op, FormParams>(service, credentials, Ok(form), context).await {
        Answer::Replayed(_) => None,
        Answer::Fresh(Ok(done)) => Some(Ok(outcome_of(Op::NAME, Op::KIND, refund_id, &Ok(done)))),
        Answer::Fresh(Err(error)) => Some(Err(error)),
    }
}

/// `back` plus `result={token}` (replacing an earlier result).
fn with_result(back: &str, token: &str) -> String {
    let (path, fragment) = back.split_once('#').unwrap_or((back, ""));
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key != "result" && key != "cancel" && key != "edit" {
            serializer.append_pair(&key, &value);
        }
    }
    serializer.append_pair("result", token);
    let mut location = format!("{path}?{}", serializer.finish());
    if !fragment.is_empty() {
        location.push('#');
        location.push_str(fragment);
    }
    location
}

/// A path of ours to go back to after an action: under `/admin`, never another host.
fn is_panel_path(path: &str) -> bool {
    (path == "/admin" || path.starts_with("/admin/") || path.starts_with("/admin?"))
        && !path.contains("//")
        && !path.contains('\\')
        && path.bytes().all(|b| b.is_ascii_graphic())
        && path.len() <= 512
}

async fn list(
    service: &RefundService,
    session: &PanelSession,
    session_id: &str,
    query: &QueryParams,
    outcome: Option<ActionOutcome>,
    chart: &[DayCounts],
) -> Reply {
    let source_type = query
        .get("sourceType")
        .filter(|word| matches!(*word, "all" | "order" | "return" | "rma"))
        .unwrap_or("all")
        .to_owned();
    let page: u32 = query
        .get("page")
        .and_then(|page| page.parse().ok())
        .unwrap_or(1)
        .max(1);
    // The list is the registry's retrieveRefundsList, with this page's size.
    let params = FormParams::from_pairs(vec![
        ("sourceType".to_owned(), source_type.clone()),
        ("resultsPage".to_owned(), (page - 1).to_string()),
        ("resultsLimit".to_owned(), LIST_PAGE_SIZE.to_string()),
    ]);
    let context = CallContext {
        origin: Origin {
            channel: Channel::Admin,
            request_id: session.caller.request_id.clone(),
        },
        idempotency_key: None,
        dialect: "panel",
        render: Box::new(|_: &Result<RefundsPage, RefundError>| StoredResponse {
            status: 200,
            content_type: String::new(),
            body: Vec::new(),
        }),
    };
    let credentials = Some(Credentials::PanelSession(session_id.to_owned()));
    let refunds = match operations::call::<RetrieveRefundsListOp, _>(
        service,
        credentials,
        Ok(&params),
        context,
    )
    .await
    {
        Answer::Fresh(Ok(page)) => page,
        Answer::Fresh(Err(RefundError::Unauthenticated)) => return redirect("/admin/login"),
        Answer::Fresh(Err(error)) => return failed(&error),
        Answer::Replayed(_) => {
            return failed(&RefundError::Internal(anyhow::anyhow!(
                "a read was replayed"
            )));
        }
    };
    let view = pages::ListView {
        source_type,
        page,
        asking_cancel: query.get("cancel").and_then(|id| id.parse().ok()),
        editing: query.get("edit").and_then(|id| id.parse().ok()),
        outcome,
    };
    match pages::list(session, &view, &refunds, chart, service.timezone()) {
        Ok(reply) => reply,
        Err(error) => failed(&error),
    }
}

async fn source_page(
    service: &RefundService,
    session: &PanelSession,
    at: SourceRef,
    outcome: Option<ActionOutcome>,
) -> Reply {
    match service.source_overview(at).await {
        Ok(overview) => match pages::source(session, &overview, outcome, service.timezone()) {
            Ok(reply) => reply,
            Err(error) => failed(&error),
        },
        Err(RefundError::SourceNotFound { .. }) => not_found(session),
        Err(error) => failed(&error),
    }
}

async fn search(service: &RefundService, session: &PanelSession, query: &QueryParams) -> Reply {
    let wanted = query.get("q").unwrap_or("").trim();
    let Ok(id) = wanted.parse::<i64>() else {
        return pages::message(
            session,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Search",
            "Type the number of an order, return, claim or refund.",
            "/admin",
        );
    };
    match service.find_by_id(id).await {
        Ok(found) if found.len() == 1 => redirect(&pages::found_href(found[0])),
        Ok(found) => pages::search(session, id, &found),
        Err(error) => failed(&error),
    }
}

/// `/admin/orders/{id}`, `/admin/returns/{id}`, `/admin/rmas/{id}`.
fn source_path(path: &str) -> Option<(SourceType, i64)> {
    let rest = path.strip_prefix("/admin/")?;
    let (kind, id) = rest.split_once('/')?;
    let source_type = match kind {
        "orders" => SourceType::Order,
        "returns" => SourceType::Return,
        "rmas" => SourceType::Rma,
        _ => return None,
    };
    let id = id.parse::<i64>().ok().filter(|id| *id > 0)?;
    Some((source_type, id))
}

async fn read_form(request: Request<Incoming>) -> Result<Bytes, Reply> {
    let body = Limited::new(request.into_body(), MAX_FORM_BYTES);
    match tokio::time::timeout(FORM_READ_TIMEOUT, body.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(_)) => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a panel form is at most {MAX_FORM_BYTES} bytes\n"),
        )),
        Err(_) => Err(text(
            StatusCode::REQUEST_TIMEOUT,
            "the form did not arrive in time\n".to_owned(),
        )),
    }
}

fn failed(error: &RefundError) -> Reply {
    tracing::error!(error = error.log_text(), "panel page failed");
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the panel failed; the cause is in the gateway's log\n".to_owned(),
    )
}

fn not_found(session: &PanelSession) -> Reply {
    pages::message(
        session,
        StatusCode::NOT_FOUND,
        "Not found",
        "There is nothing at this address.",
        "/admin",
    )
}

fn redirect(location: &str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(location) {
        reply.headers_mut().insert(LOCATION, value);
    }
    reply
}

fn text(status: StatusCode, body: String) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply
}

/// A submitted form (or a built one) as operation parameters: `refundDetails.account` is the
/// field `account` of the group `refundDetails`, as the API nests it.
#[derive(Debug, Default)]
pub struct FormParams {
    fields: Vec<(String, String)>,
    groups: Vec<(String, FormParams)>,
}

impl FormParams {
    pub fn parse(body: &[u8]) -> FormParams {
        FormParams::from_pairs(
            form_urlencoded::parse(body)
                .map(|(key, value)| (key.into_owned(), value.into_owned()))
                .collect(),
        )
    }

    fn from_pairs(pairs: Vec<(String, String)>) -> FormParams {
        let mut params = FormParams::default();
        for (key, value) in pairs {
            match key.split_once('.') {
                Some((group, field)) => {
                    let index = match params.groups.iter().position(|(name, _)| name == group) {
                        Some(index) => index,
                        None => {
                            params
                                .groups
                                .push((group.to_owned(), FormParams::default()));
                            params.groups.len() - 1
                        }
                    };
                    params.groups[index]
                        .1
                        .fields
                        .push((field.to_owned(), value));
                }
                None => params.fields.push((key, value)),
            }
        }
        params
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl Params for FormParams {
    fn scalar(&self, name: &str) -> Result<Option<Scalar<'_>>, &'static str> {
        if self.groups.iter().any(|(group, _)| group == name) {
            return Err("a group of fields");
        }
        let mut values = self.fields.iter().filter(|(key, _)| key == name);
        match (values.next(), values.next()) {
            (Some(_), Some(_)) => Err("the field twice"),
            (Some((_, value)), None) if value.trim().is_empty() => Ok(None),
            (Some((_, value)), None) => Ok(Some(Scalar::Text(value.as_str().into()))),
            (None, _) => Ok(None),
        }
    }

    fn nested(&self, name: &str) -> Result<Option<&Self>, &'static str> {
        if self.fields.iter().any(|(key, _)| key == name) {
            return Err("a single value");
        }
        Ok(self
            .groups
            .iter()
            .find(|(group, _)| group == name)
            .map(|(_, params)| params))
    }
}

/// A page's query string.
struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    fn parse(query: &str) -> QueryParams {
        QueryParams(
            form_urlencoded::parse(query.as_bytes())
                .map(|(key, value)| (key.into_owned(), value.into_owned()))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_fields_are_groups() {
        let form = FormParams::parse(
            b"sourceType=return&refundDetails.paymentFormId=3&refundDetails.account=%3Cb%3E",
        );
        assert!(
            matches!(form.scalar("sourceType"), Ok(Some(Scalar::Text(text))) if text == "return")
        );
        let details = form.nested("refundDetails").unwrap().unwrap();
        assert!(matches!(details.scalar("account"), Ok(Some(Scalar::Text(text))) if text == "<b>"));
        assert!(form.scalar("refundDetails").is_err());
    }

    #[test]
    fn only_panel_paths_are_gone_back_to() {
        assert!(is_panel_path("/admin?sourceType=rma&page=2"));
        assert!(is_panel_path("/admin/orders/1001"));
        assert!(!is_panel_path("//evil.example/admin"));
        assert!(!is_panel_path("/admin//evil.example"));
        assert!(!is_panel_path("https://evil.example/admin"));
        assert!(!is_panel_path("/adminx"));
    }

    #[test]
    fn a_result_replaces_the_step_it_came_from() {
        assert_eq!(
            with_result("/admin?sourceType=rma&cancel=7#refund-7", "abc"),
            "/admin?sourceType=rma&result=abc#refund-7"
        );
    }
}
