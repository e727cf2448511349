//! Handing a routed call to its face (SOAP, REST, the JSON gate) and turning the face's
//! answer into an HTTP reply.

use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, StatusCode};

use crate::metrics::Served;
use crate::rest::{self, JsonReply};
use crate::soap::envelope::SoapVersion;
use crate::soap::{self, SoapReply};

use super::body::call_parts;
use super::{App, Reply, outcome_of, plain};

pub(super) const JSON: &str = "application/json";

pub(super) async fn rest_request(
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

pub(super) async fn gate_request(
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

pub(super) fn json_reply(reply: JsonReply) -> Reply {
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

pub(super) async fn soap_request(
    app: &App,
    request: Request<Incoming>,
    request_id: Option<String>,
) -> Reply {
    // A header value shares the request head's buffer: keeping it copies nothing.
    let content_type = request.headers().get(CONTENT_TYPE).cloned();
    let content_type = content_type.as_ref().and_then(|value| value.to_str().ok());
    let version = SoapVersion::from_content_type(content_type);
    let parts = match call_parts(app, request, false).await {
        Ok(parts) => parts,
        Err(error) => return soap_reply(SoapReply::fault(&error.fault(app, version))),
    };
    let call = soap::SoapCall {
        body: &parts.body.bytes,
        content_type,
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

pub(super) fn soap_reply(reply: SoapReply) -> Reply {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = plain(status, reply.content_type, reply.body);
    response.extensions_mut().insert(Served {
        face: "soap",
        operation: reply.operation,
        outcome: reply.outcome,
    });
    response
}
