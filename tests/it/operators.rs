//! Confirmed automatic refunds reach their payment operator exactly once. A scripted operator
//! speaks the HTTP operator protocol on a real port; the gateway's outbox worker talks to it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use refunds_gateway::operators::http::signature;
use refunds_gateway::operators::{OperatorConfig, OperatorsConfig, RetryConfig};
use serde_json::{Value, json};

use crate::support::{
    Backend, TEST_API_KEY, TestLedger, TestServer, client, on_both_backends, rest_request,
};

pub const SECRET: &str = "operator-shared-secret";

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Reply {
    Json(u16, Value),
    /// Wait this long before answering (longer than the gateway's timeout: a timeout).
    Slow(u64, u16, Value),
}

/// What the operator does: answers to sends and to status queries, in order (the last repeats).
/// With `remember`, a refund it answered `completed` once is reported completed afterwards,
/// and a repeated send under the same idempotency key is not a second refund.
#[derive(Clone, Debug, Default)]
pub struct Script {
    pub sends: Vec<Reply>,
    pub queries: Vec<Reply>,
    pub remember: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub signed: bool,
    pub body: Value,
}

#[derive(Default)]
pub struct OperatorState {
    pub received: Vec<Received>,
    /// Refund id → how many times money was actually sent back for it.
    pub effective: HashMap<String, u32>,
    sends_answered: usize,
    queries_answered: usize,
}

pub struct TestOperator {
    pub url: String,
    pub state: Arc<Mutex<OperatorState>>,
}

impl TestOperator {
    pub async fn start(script: Script) -> TestOperator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/testpay", listener.local_addr().expect("address"));
        let state = Arc::new(Mutex::new(OperatorState::default()));
        let served = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = served.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        let script = script.clone();
                        async move { Ok::<_, Infallible>(answer(&script, &state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestOperator { url, state }
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("state").received.clone()
    }

    pub fn count(&self, method: &str) -> usize {
        self.received()
            .iter()
            .filter(|r| r.method == method)
            .count()
    }
}

async fn answer(
    script: &Script,
    state: &Mutex<OperatorState>,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let idempotency_key = header("idempotency-key");
    let given = header("x-signature");
    let body = request
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let signed_message = if method == "GET" {
        format!("GET {}", path.trim_start_matches("/testpay")).into_bytes()
    } else {
        body.to_vec()
    };
    let signed = given.as_deref() == Some(signature(SECRET.as_bytes(), &signed_message).as_str());
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let refund_id = if method == "GET" {
        path.rsplit('/').next().unwrap_or_default().to_owned()
    } else {
        idempotency_key.clone().unwrap_or_default()
    };
    let reply = {
        let mut state = state.lock().expect("state");
        state.received.push(Received {
            method: method.clone(),
            path,
            idempotency_key,
            signed,
            body: parsed,
        });
        let remembered = script.remember && state.effective.contains_key(&refund_id);
        if remembered {
            Reply::Json(
                200,
                json!({"status": "completed", "operatorRefundId": format!("OP-{refund_id}")}),
            )
        } else {
            let (replies, answered) = if method == "GET" {
                (&script.queries, &mut state.queries_answered)
            } else {
                (&script.sends, &mut state.sends_answered)
            };
            let reply = replies
                .get(*answered)
                .or(replies.last())
                .cloned()
                .unwrap_or(Reply::Json(404, json!({})));
            *answered += 1;
            reply
        }
    };
    let (status, mut body) = match reply {
        Reply::Json(status, body) => (status, body),
        Reply::Slow(delay, status, body) => {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            (status, body)
        }
    };
    if body["operatorRefundId"] == "auto" {
        body["operatorRefundId"] = json!(format!("OP-{refund_id}"));
    }
    // Money goes back when a send is answered "completed" (a remembered refund is answered
    // from memory above, without sending money again).
    let remembered = script.remember
        && state
            .lock()
            .expect("state")
            .effective
            .contains_key(&refund_id);
    if method == "POST" && status == 200 && body["status"] == "completed" && !remembered {
        *state
            .lock()
            .expect("state")
            .effective
            .entry(refund_id)
            .or_insert(0) += 1;
    }
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    response
}

/// An operators configuration: payment system 27 (payment 11 of the test shop) → `testpay`.
pub fn operators_config(url: &str, poll_after_ms: i64) -> OperatorsConfig {
    let mut config = OperatorsConfig::default();
    config
        .payment_systems
        .insert("27".to_owned(), "testpay".to_owned());
    config.retry = RetryConfig {
        base_ms: 20,
        cap_ms: 200,
        lease_ms: 2_000,
    };
    config.operators.insert(
        "testpay".to_owned(),
        OperatorConfig::Http {
            url: url.to_owned(),
            secret: Some(SECRET.to_owned()),
            secret_env: None,
            timeout_ms: 300,
            poll_after_ms,
        },
    );
    config
}

struct Case {
    server: TestServer,
    operator: TestOperator,
    http: reqwest::Client,
    ledger: TestLedger,
}

impl Case {
    async fn start(backend: Backend, script: Script, poll_after_ms: i64) -> Case {
        let operator = TestOperator::start(script).await;
        let ledger = TestLedger::with_test_shop(backend);
        let mut config = ledger.config();
        config.run_outbox = true;
        config.operators = operators_config(&operator.url, poll_after_ms);
        let server = TestServer::start_with(config).await;
        Case {
            server,
            operator,
            http: client(),
            ledger,
        }
    }

    async fn rest(&self, method: reqwest::Method, operation: &str, params: Value) -> Value {
        let response = rest_request(
            &self.http,
            &self.server.base,
            TEST_API_KEY,
            method,
            operation,
            &params,
        )
        .send()
        .await
        .expect("send");
        serde_json::from_str(&response.text().await.expect("body")).expect("JSON")
    }

    /// Adds and confirms an automatic refund of `amount` from payment 11; returns its id.
    async fn confirm(&self, amount: &str) -> i64 {
        let added = self
            .rest(reqwest::Method::POST, "addAutomaticRefundForOrder", json!({"sourceId": 2001, "paymentId": 11, "refundValue": amount, "refundCurrency": "PLN"}))
            .await;
        let id = added["result"]["refundId"].as_i64().expect("refundId");
        let confirmed = self
            .rest(
                reqwest::Method::PUT,
                "confirmRefund",
                json!({"sourceType": "order", "sourceId": 2001, "paymentId": id}),
            )
            .await;
        assert_eq!(
            confirmed["result"]["confirmResult"],
            json!(true),
            "{confirmed}"
        );
        id
    }

    async fn status(&self, id: i64) -> Value {
        self.rest(
            reqwest::Method::GET,
            "getRefundStatus",
            json!({"sourceType": "order", "sourceId": 2001, "paymentId": id}),
        )
        .await["result"]
            .clone()
    }

    /// Waits until the refund is no longer Processing (or gives up after 10 s).
    async fn settled(&self, id: i64) -> Value {
        for _ in 0..200 {
            let status = self.status(id).await;
            if status["refundStatus"] != "Processing" {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "refund {id} is still Processing; operator saw {:?}",
            self.operator.received()
        );
    }

    async fn callback(&self, body: Value, signed_with: &str) -> u16 {
        let body = body.to_string();
        self.http
            .post(format!("{}/operators/testpay/callback", self.server.base))
            .header(
                "x-signature",
                signature(signed_with.as_bytes(), body.as_bytes()),
            )
            .body(body)
            .send()
            .await
            .expect("callback")
            .status()
            .as_u16()
    }
}

fn completed(id: &str) -> Value {
    json!({"status": "completed", "operatorRefundId": id})
}

on_both_backends!(immediate_success);
async fn immediate_success(backend: Backend) {
    let case = Case::start(
        backend,
        Script {
            sends: vec![Reply::Json(200, completed("OP-1"))],
            ..Script::default()
        },
        60_000,
    )
    .await;
    let id = case.confirm("40.00").await;
    let status = case.settled(id).await;
    assert_eq!(
        (
            status["refundStatus"].as_str(),
            status["refundExternalId"].as_str()
        ),
        (Some("Completed"), Some("OP-1"))
    );
    let received = case.operator.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let send = &received[0];
    assert_eq!(
        (send.method.as_str(), send.path.as_str()),
        ("POST", "/testpay/refunds")
    );
    assert_eq!(send.idempotency_key, Some(id.to_string()));
    assert!(send.signed, "the request carries a valid HMAC signature");
    assert_eq!(
        send.body,
        json!({"refundId": id, "paymentExternalId": "PAYU-11", "amount": "40.00", "currency": "PLN"})
    );
    case.server.stop().await;
}

on_both_backends!(a_decline_fails_the_refund_and_releases_its_amount);
async fn a_decline_fails_the_refund_and_releases_its_amount(backend: Backend) {
    let declined = json!({"status": "declined", "reason": "account closed"});
    let case = Case::start(
        backend,
        Script {
            sends: vec![Reply::Json(200, declined)],
            ..Script::default()
        },
        60_000,
    )
    .await;
    let id = case.confirm("40.00").await;
    let status = case.settled(id).await;
    assert_eq!(status["refundStatus"], json!("Failed"));
    let possible = case
        .rest(
            reqwest::Method::GET,
            "getPossibleAutoRefunds",
            json!({"sourceType": "order", "sourceId": 2001}),
        )
        .await;
    assert_eq!(
        possible["results"][0]["value"].to_string(),
        "200.00",
        "the failed refund no longer holds its amount"
    );
    assert_eq!(case.operator.count("POST"), 1);
    case.server.stop().await;
}

on_both_backends!(accepted_then_callback_and_callbacks_that_change_nothing);
async fn accepted_then_callback_and_callbacks_that_change_nothing(backend: Backend) {
    let case = Case::start(
        backend,
        Script {
            sends: vec![Reply::Json(202, json!({"status": "accepted"}))],
            ..Script::default()
        },
        60_000,
    )
    .await;
    let id = case.confirm("40.00").await;
    // The worker sends once and records the 202: the job waits to ask for the status later.
    let job_state = || -> String {
        case.ledger
            .text(&format!("SELECT state FROM outbox WHERE refund_id = {id}"))
    };
    // (Under load the 300 ms send timeout may fire first: then the job also waits in
    // `query`, and the send still arrives.)
    for _ in 0..250 {
        if job_state() == "query" && case.operator.count("POST") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(job_state(), "query", "the send's answer was recorded");
    assert_eq!(case.operator.count("POST"), 1, "sent once");
    assert_eq!(case.status(id).await["refundStatus"], json!("Processing"));

    // A bad signature is refused and changes nothing.
    let message = json!({"refundId": id, "status": "completed", "operatorRefundId": "OP-7", "amount": "40.00", "currency": "PLN"});
    assert_eq!(case.callback(message.clone(), "wrong secret").await, 401);
    assert_eq!(case.status(id).await["refundStatus"], json!("Processing"));
    // An unknown refund is not found.
    assert_eq!(
        case.callback(json!({"refundId": 999_999, "status": "completed"}), SECRET)
            .await,
        404
    );
    // The real one settles it; a duplicate and a late, contradicting one change nothing.
    assert_eq!(case.callback(message.clone(), SECRET).await, 200);
    assert_eq!(case.callback(message, SECRET).await, 200);
    assert_eq!(
        case.callback(
            json!({"refundId": id, "status": "declined", "reason": "late", "amount": "40.00", "currency": "PLN"}),
            SECRET
        )
        .await,
        200
    );
    let status = case.status(id).await;
    assert_eq!(
        (
            status["refundStatus"].as_str(),
            status["refundExternalId"].as_str()
        ),
        (Some("Completed"), Some("OP-7"))
    );
    assert_eq!(
        (case.operator.count("POST"), case.operator.count("GET")),
        (1, 0),
        "no polling before poll_after"
    );
    case.server.stop().await;
}

on_both_backends!(a_callback_for_another_amount_or_currency_settles_nothing);
async fn a_callback_for_another_amount_or_currency_settles_nothing(backend: Backend) {
    // Accepted at the send; the status query (due 1.5 s later) says completed.
    let case = Case::start(
        backend,
        Script {
            sends: vec![Reply::Json(202, json!({"status": "accepted"}))],
            queries: vec![Reply::Json(200, completed("OP-Q"))],
            remember: false,
        },
        1_500,
    )
    .await;
    let id = case.confirm("40.00").await;
    let callback = |amount: Value, currency: Value| {
        let mut message =
            json!({"refundId": id, "status": "completed", "operatorRefundId": "OP-X"});
        for (name, value) in [("amount", amount), ("currency", currency)] {
            if !value.is_null() {
                message[name] = value;
            }
        }
        message
    };
    for message in [
        callback(json!("40.01"), json!("PLN")),
        callback(json!(4), json!("PLN")),
        callback(json!("40.00"), json!("EUR")),
        callback(json!("40.00"), Value::Null),
        callback(Value::Null, json!("PLN")),
    ] {
        assert_eq!(
            case.callback(message.clone(), SECRET).await,
            409,
            "{message}"
        );
    }
    assert_eq!(case.status(id).await["refundStatus"], json!("Processing"));
    let metrics = crate::support::scrape_metrics(&case.http, &case.server.base).await;
    assert!(
        metrics.contains("refunds_gateway_operator_callbacks_total{outcome=\"mismatch\"} 5"),
        "{metrics}"
    );
    // The status query settles it with what the operator says there.
    let status = case.settled(id).await;
    assert_eq!(
        (
            status["refundStatus"].as_str(),
            status["refundExternalId"].as_str()
        ),
        (Some("Completed"), Some("OP-Q"))
    );
    // The same amount written another way is the same amount.
    assert_eq!(
        case.callback(callback(json!(40), json!("PLN")), SECRET)
            .await,
        200,
        "a callback for the settled refund's own amount is answered (and ignored)"
    );
    case.server.stop().await;
}

on_both_backends!(a_timeout_is_followed_by_a_status_query_not_a_second_send);
async fn a_timeout_is_followed_by_a_status_query_not_a_second_send(backend: Backend) {
    let script = Script {
        sends: vec![Reply::Slow(1_000, 200, completed("OP-slow"))],
        queries: vec![Reply::Json(200, completed("OP-slow"))],
        remember: false,
    };
    let case = Case::start(backend, script, 60_000).await;
    let id = case.confirm("40.00").await;
    let status = case.settled(id).await;
    assert_eq!(
        (
            status["refundStatus"].as_str(),
            status["refundExternalId"].as_str()
        ),
        (Some("Completed"), Some("OP-slow"))
    );
    assert_eq!(
        case.operator.count("POST"),
        1,
        "never resent blindly: {:?}",
        case.operator.received()
    );
    assert!(case.operator.count("GET") >= 1);
    assert!(case.operator.received().iter().all(|r| r.signed));
    case.server.stop().await;
}

on_both_backends!(server_errors_then_success_under_the_same_idempotency_key);
async fn server_errors_then_success_under_the_same_idempotency_key(backend: Backend) {
    // The operator fails twice without doing anything (its status query says "no such refund"),
    // then accepts: three sends, one key, one refund.
    let script = Script {
        sends: vec![
            Reply::Json(500, json!({})),
            Reply::Json(500, json!({})),
            Reply::Json(200, completed("OP-3")),
        ],
        queries: vec![Reply::Json(404, json!({}))],
        remember: false,
    };
    let case = Case::start(backend, script, 60_000).await;
    let id = case.confirm("40.00").await;
    let status = case.settled(id).await;
    assert_eq!(status["refundStatus"], json!("Completed"));
    let sends: Vec<Received> = case
        .operator
        .received()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(sends.len(), 3);
    assert!(
        sends
            .iter()
            .all(|send| send.idempotency_key == Some(id.to_string()))
    );
    assert_eq!(
        case.operator.count("GET"),
        2,
        "each failure was followed by a status query"
    );
    assert_eq!(
        case.operator
            .state
            .lock()
            .expect("state")
            .effective
            .get(&id.to_string()),
        Some(&1)
    );
    case.server.stop().await;
}

on_both_backends!(the_sandbox_settles_by_amount_pattern);
async fn the_sandbox_settles_by_amount_pattern(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    let mut config = refunds_gateway::Config::new(ledger.database.clone());
    config.operators = OperatorsConfig::default();
    config.operators.operators.insert(
        "sandbox".to_owned(),
        OperatorConfig::Sandbox {
            // Long enough that the first status read below still sees Processing.
            settle_after_ms: 1_000,
        },
    );
    let server = TestServer::start_with(config).await;
    let case = Case {
        server,
        operator: TestOperator::start(Script::default()).await,
        http: client(),
        ledger,
    };
    let completed = case.confirm("40.00").await;
    let declined = case.confirm("10.13").await;
    assert_eq!(
        case.status(completed).await["refundStatus"],
        json!("Processing")
    );
    let status = case.settled(completed).await;
    assert_eq!(
        (
            status["refundStatus"].as_str(),
            status["refundExternalId"].as_str()
        ),
        (
            Some("Completed"),
            Some(format!("SANDBOX-{completed}").as_str())
        )
    );
    assert_eq!(
        case.settled(declined).await["refundStatus"],
        json!("Failed")
    );
    case.server.stop().await;
}
