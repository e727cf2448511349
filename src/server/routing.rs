//! Where a request goes: routing by (method, path, gate), and the routes answered here
//! (WSDL, OpenAPI, health, readiness, metrics, not found).

use hyper::body::Incoming;
use hyper::header::{HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};

use crate::refunds::RefundError;
use crate::rest::{self, JsonReply};
use crate::soap;

use super::callback::callback_request;
use super::config::MetricsToken;
use super::faces::{JSON, gate_request, json_reply, rest_request, soap_request};
use super::headers::header;
use super::{App, Reply, plain};

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

pub(super) async fn route(
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
