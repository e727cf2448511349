//! The shop's webhooks: a real receiver on a free port gets every refund change signed, in
//! order per refund, again after its failures, and after the gateway was killed.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hmac::{KeyInit as _, Mac as _};
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use refunds_gateway::store::Database;
use serde_json::{Value, json};

use crate::support::{
    Backend, ServeProcess, TEST_API_KEY, TestLedger, TestServer, client, element_text, gateway,
    on_both_backends, post, rest_request, soap11, soap11_headers,
};

const SECRET: &str = "whsec_receiver_shared_secret";

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    signature: String,
    body: String,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("the event is JSON")
    }
}

#[derive(Default)]
struct ReceiverState {
    received: Vec<Received>,
    /// Answer 500 to this many requests first.
    failures_left: usize,
}

struct Receiver {
    url: String,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    async fn start(failures: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Receiver::serve(listener, failures)
    }

    fn serve(listener: tokio::net::TcpListener, failures: usize) -> Receiver {
        let url = format!("http://{}/hooks", listener.local_addr().expect("address"));
        let state = Arc::new(Mutex::new(ReceiverState {
            received: Vec::new(),
            failures_left: failures,
        }));
        let served = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = served.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(receive(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { url, state }
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().expect("state").received.clone()
    }

    /// Waits (up to `within`) until `enough` holds for what was received.
    async fn wait_for(
        &self,
        within: Duration,
        enough: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let received = self.received();
            if enough(&received) || tokio::time::Instant::now() > deadline {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(
    state: &Mutex<ReceiverState>,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let signature = request
        .headers()
        .get("refunds-signature")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = request
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = String::from_utf8(body.to_vec()).expect("UTF-8 body");
    let mut state = state.lock().expect("state");
    state.received.push(Received { signature, body });
    let status = if state.failures_left > 0 {
        state.failures_left -= 1;
        500
    } else {
        200
    };
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(b"{\"ok\":true}")))
        .expect("response")
}

/// How a receiver checks a request: recompute the HMAC of `"<t>.<body>"` with its secret and
/// compare with each `v1=`; reject timestamps older than five minutes.
fn verify(received: &Received, secret: &str) -> bool {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in received.signature.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signatures.push(value.to_owned()),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - timestamp).abs() > 300 {
        return false;
    }
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{timestamp}.{}", received.body).as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    signatures.contains(&expected)
}

/// Subscribes `url` to every event with the shared secret, through the command line.
fn subscribe(database: impl AsRef<std::ffi::OsStr>, url: &str) -> i64 {
    let output = gateway()
        .args(["webhook", "add", "--db"])
        .arg(database)
        .args(["--url", url, "--secret-env", "TEST_WEBHOOK_SECRET", "--events"])
        .arg("refund.created,refund.updated,refund.confirmed,refund.completed,refund.failed,refund.canceled")
        .env("TEST_WEBHOOK_SECRET", SECRET)
        .output()
        .expect("webhook add");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.lines().count(),
        1,
        "no secret is printed when one is given: {stdout}"
    );
    stdout.trim().parse().expect("the endpoint id")
}

fn config_on(database: Database) -> refunds_gateway::Config {
    let mut config = crate::support::test_config_on(database);
    config.webhooks.allow_private = true;
    config.webhooks.policy.base_ms = 100;
    config.run_outbox = true;
    config.operators.operators.insert(
        "sandbox".to_owned(),
        refunds_gateway::operators::OperatorConfig::Sandbox {
            settle_after_ms: 100,
        },
    );
    config
}

async fn rest(
    server: &TestServer,
    method: reqwest::Method,
    operation: &str,
    params: Value,
) -> Value {
    crate::support::rest_ok(&server.base, method, operation, params).await
}

on_both_backends!(every_change_arrives_signed_and_in_order_per_refund);
async fn every_change_arrives_signed_and_in_order_per_refund(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    let receiver = Receiver::start(0).await;
    subscribe(ledger.db_arg(), &receiver.url);
    let server = TestServer::start_with(config_on(ledger.database.clone())).await;

    // Over SOAP: a manual refund, updated and confirmed (confirmed and completed at once).
    let soap = |operation: &str, params: String| {
        let http = client();
        let base = server.base.clone();
        let operation = operation.to_owned();
        async move {
            let answer = post(
                &http,
                &format!("{base}/soap/refunds"),
                &soap11_headers(&operation),
                soap11(&operation, &params),
            )
            .await;
            assert_eq!(
                element_text(&answer.body, "faultCode"),
                Some("0"),
                "{}",
                answer.body
            );
            answer.body
        }
    };
    let added = soap(
        "addManualRefund",
        "<r:sourceType>order</r:sourceType><r:sourceId>2001</r:sourceId>\
         <r:refundValue>10.00</r:refundValue><r:refundCurrency>PLN</r:refundCurrency>\
         <r:refundDetails><r:paymentFormId>1</r:paymentFormId></r:refundDetails>"
            .to_owned(),
    )
    .await;
    let manual: i64 = element_text(&added, "refundId")
        .expect("refundId")
        .parse()
        .expect("id");
    let at = |id: i64| {
        format!(
            "<r:sourceType>order</r:sourceType><r:sourceId>2001</r:sourceId><r:paymentId>{id}</r:paymentId>"
        )
    };
    soap(
        "updateRefund",
        format!(
            "{}<r:refundValue>12.00</r:refundValue><r:refundCurrency>PLN</r:refundCurrency>",
            at(manual)
        ),
    )
    .await;
    soap("confirmRefund", at(manual)).await;

    // Over REST: an automatic refund confirmed (the sandbox completes it), another cancelled.
    let add =
        json!({"sourceId": 2001, "paymentId": 11, "refundValue": "20.00", "refundCurrency": "PLN"});
    let post_ = reqwest::Method::POST;
    let automatic = rest(
        &server,
        post_.clone(),
        "addAutomaticRefundForOrder",
        add.clone(),
    )
    .await;
    let automatic = automatic["result"]["refundId"].as_i64().expect("id");
    let cancelled = rest(&server, post_, "addAutomaticRefundForOrder", add).await;
    let cancelled = cancelled["result"]["refundId"].as_i64().expect("id");
    let rest_at = |id: i64| json!({"sourceType": "order", "sourceId": 2001, "paymentId": id});
    rest(
        &server,
        reqwest::Method::PUT,
        "confirmRefund",
        rest_at(automatic),
    )
    .await;
    rest(
        &server,
        reqwest::Method::PUT,
        "cancelRefund",
        rest_at(cancelled),
    )
    .await;

    let expected: HashMap<i64, Vec<&str>> = HashMap::from([
        (
            manual,
            vec![
                "refund.created",
                "refund.updated",
                "refund.confirmed",
                "refund.completed",
            ],
        ),
        (
            automatic,
            vec!["refund.created", "refund.confirmed", "refund.completed"],
        ),
        (cancelled, vec!["refund.created", "refund.canceled"]),
    ]);
    let received = receiver
        .wait_for(Duration::from_secs(20), |received| received.len() >= 9)
        .await;
    let mut by_refund: HashMap<i64, Vec<String>> = HashMap::new();
    let mut ids = HashSet::new();
    for request in &received {
        assert!(
            verify(request, SECRET),
            "signed with the endpoint's secret: {request:?}"
        );
        assert!(
            !verify(request, "whsec_some_other_secret"),
            "a wrong secret fails"
        );
        let event = request.json();
        assert!(
            ids.insert(event["id"].as_str().expect("id").to_owned()),
            "each event once here"
        );
        let refund = event["data"]["refundId"].as_i64().expect("refundId");
        by_refund
            .entry(refund)
            .or_default()
            .push(event["type"].as_str().expect("type").to_owned());
        let created = event["created"].as_str().expect("created");
        assert!(
            chrono::DateTime::parse_from_rfc3339(created).is_ok(),
            "{created}"
        );
        let face = event["data"]["face"].as_str().expect("face");
        let expected_face = if refund == manual {
            "soap"
        } else if event["type"] == "refund.completed" {
            "worker"
        } else {
            "rest"
        };
        assert_eq!(face, expected_face, "{event}");
    }
    for (refund, types) in &expected {
        assert_eq!(
            by_refund.get(refund).cloned().unwrap_or_default(),
            *types,
            "refund {refund}"
        );
    }
    assert_eq!(received.len(), 9);
    let completed = received
        .iter()
        .map(Received::json)
        .find(|event| event["type"] == "refund.completed" && event["data"]["refundId"] == automatic)
        .expect("the automatic refund completed");
    assert_eq!(completed["data"]["refundStatus"], "Completed");
    assert_eq!(completed["data"]["refundValue"].to_string(), "20.00");
    assert_eq!(
        completed["data"]["refundExternalId"],
        format!("SANDBOX-{automatic}")
    );
    assert_eq!(completed["data"]["paymentId"], 11);
    assert_eq!(completed["data"]["actor"], "outbox:sandbox");
    server.stop().await;
}

on_both_backends!(an_endpoint_added_while_the_gateway_runs_gets_the_next_changes);
/// Issue 16: the writer asks whether any endpoint is enabled once per write batch, not per
/// change. An endpoint added by the command line (another process) while the gateway runs gets
/// the events of the very next changes, and none of the changes before it.
async fn an_endpoint_added_while_the_gateway_runs_gets_the_next_changes(backend: Backend) {
    let receiver = Receiver::start(0).await;
    let ledger = TestLedger::with_test_shop(backend);
    let server = TestServer::start_with(config_on(ledger.database.clone())).await;
    let manual = json!({"sourceType": "order", "sourceId": 2001, "refundValue": "1.00",
        "refundCurrency": "PLN", "refundDetails": {"paymentFormId": 1}});
    // Writes at once, so that they share batches, before any endpoint exists.
    let before = futures_util::future::join_all((0..8).map(|_| {
        rest(
            &server,
            reqwest::Method::POST,
            "addManualRefund",
            manual.clone(),
        )
    }))
    .await;
    assert_eq!(before.len(), 8);

    subscribe(ledger.db_arg(), &receiver.url);
    let after = rest(&server, reqwest::Method::POST, "addManualRefund", manual).await;
    let refund_id = after["result"]["refundId"]
        .as_i64()
        .unwrap_or_else(|| panic!("refundId in {after}"));
    receiver
        .wait_for(Duration::from_secs(20), |received| !received.is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = receiver.received();
    assert_eq!(received.len(), 1, "only the change after the subscription");
    let event: Value = serde_json::from_str(&received[0].body).expect("JSON");
    assert_eq!(event["type"], "refund.created");
    assert_eq!(event["data"]["refundId"], refund_id, "{event}");
    server.stop().await;
}

on_both_backends!(a_receiver_that_fails_three_times_gets_the_event_on_the_fourth_try);
async fn a_receiver_that_fails_three_times_gets_the_event_on_the_fourth_try(backend: Backend) {
    let receiver = Receiver::start(3).await;
    let ledger = TestLedger::with_test_shop(backend);
    let endpoint = subscribe(ledger.db_arg(), &receiver.url);
    let server = TestServer::start_with(config_on(ledger.database.clone())).await;
    let manual = json!({"sourceType": "order", "sourceId": 2001, "refundValue": "1.00",
        "refundCurrency": "PLN", "refundDetails": {"paymentFormId": 1}});
    rest(&server, reqwest::Method::POST, "addManualRefund", manual).await;
    let received = receiver
        .wait_for(Duration::from_secs(20), |received| received.len() >= 4)
        .await;
    assert_eq!(received.len(), 4, "three failures, then the success");
    assert!(
        received
            .iter()
            .all(|request| request.body == received[0].body),
        "the same event"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.received().len(),
        4,
        "nothing more after the success"
    );

    let metrics = crate::support::scrape_metrics(&client(), &server.base).await;
    assert!(
        metrics.contains("refunds_gateway_webhook_deliveries_total{outcome=\"retry\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("refunds_gateway_webhook_deliveries_total{outcome=\"delivered\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("refunds_gateway_webhook_queue_depth 0"),
        "{metrics}"
    );
    server.stop().await;

    let listed = gateway()
        .args(["webhook", "deliveries", "--db"])
        .arg(ledger.db_arg())
        .args(["--endpoint", &endpoint.to_string()])
        .output()
        .expect("deliveries");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("\tdelivered\t4 attempt(s)"), "{listed}");
}

on_both_backends!(events_pending_when_the_gateway_is_killed_are_delivered_after_restart);
/// SIGKILL while 100 events wait for a receiver that is down: after the restart every event
/// is delivered, none lost.
async fn events_pending_when_the_gateway_is_killed_are_delivered_after_restart(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    // A port nobody listens on yet: deliveries fail until the receiver starts there.
    let parked = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let receiver_address = parked.local_addr().expect("address");
    drop(parked);
    subscribe(ledger.db_arg(), &format!("http://{receiver_address}/hooks"));

    let start = || {
        ServeProcess::start(
            ledger.db_arg(),
            &[
                "--allow-private-webhooks",
                "--webhook-retry-base-ms",
                "200",
                "--webhook-timeout-ms",
                "5000",
            ],
        )
    };
    let mut first = start();
    let base = format!("http://{}", first.address);
    let http = client();
    for _ in 0..100 {
        let manual = json!({"sourceType": "order", "sourceId": 2001, "refundValue": "1.00",
            "refundCurrency": "PLN", "refundDetails": {"paymentFormId": 1}});
        let response = rest_request(
            &http,
            &base,
            TEST_API_KEY,
            reqwest::Method::POST,
            "addManualRefund",
            &manual,
        )
        .send()
        .await
        .expect("send");
        assert_eq!(response.status(), 200);
    }
    first.process.0.kill().expect("SIGKILL");
    let _ = first.process.0.wait();

    let listener = tokio::net::TcpListener::bind(receiver_address)
        .await
        .expect("bind the receiver");
    let receiver = Receiver::serve(listener, 0);
    let _second = start();
    // Generous: both backends' variants, each with a gateway, and PostgreSQL share the
    // machine with the other tests; on a busy machine a short delivery timeout lets the
    // backoff grow past a short wait. What matters is that every event arrives.
    let received = receiver
        .wait_for(Duration::from_secs(120), |received| {
            received
                .iter()
                .map(|request| request.json()["id"].as_str().unwrap_or_default().to_owned())
                .collect::<HashSet<_>>()
                .len()
                >= 100
        })
        .await;
    let events: HashSet<String> = received
        .iter()
        .map(|request| request.json()["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(events.len(), 100, "every event delivered after the restart");
    assert!(received.iter().all(|request| verify(request, SECRET)));
}
