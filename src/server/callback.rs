//! `POST /operators/{name}/callback`: a payment operator's signed, asynchronous result.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use crate::operators::http::OperatorMessage;
use crate::refunds::CallbackOutcome;

use super::body::read_body_held;
use super::faces::{JSON, json_reply};
use super::headers::header;
use super::{App, Reply, plain};

/// `POST /operators/{name}/callback`: an operator's asynchronous result, signed. Every outcome
/// is counted in the metrics.
pub(super) async fn callback_request(app: &App, request: Request<Incoming>, name: &str) -> Reply {
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
