//! The request path piece by piece, through the crate's public API, on the request fixtures
//! (`fixtures/soap/{operation}/success.request.xml`) of getRefundStatus, addManualRefund and
//! retrieveRefundsList:
//!
//! - `prepass/{operation}`: `soap::envelope::parse` alone (UTF-8 check, one streaming pass,
//!   the operation's tree).
//! - `bind/{operation}`: `<Op as Operation>::bind` on the tree the pre-pass made (the
//!   `params` element), as `soap::handle` does after the pre-pass.
//! - `write/{face}_{answer}`: the response for a getRefundStatus answer and for a
//!   retrieveRefundsList page of 10 refunds: the SOAP 1.1 envelope (`soap::response`) and the
//!   REST face's JSON (`JsonOperation::result_json`, then the text, as `rest` makes its 200
//!   body). Both answers come from the service below.
//! - `service/{step}`: the steps of a SOAP getRefundStatus through the service, each alone:
//!   `authenticate` of the legacy user, remembered (the credentials checked less than
//!   `credentials_ttl` ago: no ledger read) and checked (time to live zero: a read of the
//!   user), and `get_refund_status` (a read transaction over the refund and its source on a
//!   pooled connection, on the calling thread).
//! - `end_to_end/{face}_{operation}`: one call in-process, without HTTP: `soap::handle` or
//!   `rest::handle_rest` on a `RefundService` over a real SQLite file (under the target
//!   directory, so on the disk the service would use), loaded like the integration tests load
//!   theirs: `fixtures/test-shop.json` imported as `import` does, the test user and key, and
//!   the `fixtures/soap/_setup/` requests. The clock is fixed at the fixtures' instant so that
//!   their legacy keys authenticate.
//!
//! - `log/{writer}`: the log lines of one request at the default level (the request span with
//!   its id, method, path and operation, and the `answered` event), formatted as `serve`'s text
//!   log and written to `/dev/null`: `direct` on the caller's thread under a lock, as `serve`
//!   wrote to stderr before, and `log_output` handed to `log_output`'s writing thread.
//! - `writer/{operation}_64`: 64 writes at once through the service (no HTTP), as 64
//!   connections send them: addManualRefund and addAutomaticRefundForOrder of 0.01 PLN, and
//!   confirmRefund of 64 automatic refunds added (untimed) before each round. They go to the
//!   single writer thread, which commits whatever has queued up in one transaction (group
//!   commit, `synchronous=FULL`), so the time per element is the writer's cost per write
//!   including its share of the commit and its fsync: the number that bounds durable writes/s.
//!   The fsync makes it depend on the disk and on what else writes to it; `writer_tmpfs/…` runs
//!   the same on a database in /dev/shm (where fsync costs nothing): the writer's CPU per write.
//!
//! Before measuring, every timed call is run once and must succeed (faultCode 0, HTTP 200), so
//! an error path is never what gets timed.
//!
//! Run: `cargo bench --bench hot_paths` (add `-- --warm-up-time 1 --measurement-time 3` for a
//! shorter run); `cargo test --benches` runs each benchmark once.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use rust_decimal::Decimal;
use serde_json::Value;
use tokio::runtime::Runtime;

use refunds_gateway::clock::{Clock, parse_local_datetime};
use refunds_gateway::log_output::LogOutput;
use refunds_gateway::metrics::Outcome;
use refunds_gateway::operations::{
    AddManualRefundOp, GetRefundStatusOp, Operation, RetrieveRefundsListOp,
};
use refunds_gateway::operators::OperatorsConfig;
use refunds_gateway::refunds::types::{
    ApiUser, ManualDetails, RequestedAmount, Scopes, SourceFilter, SourceRef, SourceType,
};
use refunds_gateway::refunds::{
    AddAutomaticRefundForOrder, AddManualRefund, Answer, Caller, Channel, Credentials,
    LegacyCredentials, Origin, Policy, RefundAt, RefundService, RefundStatusView, RefundsPage,
    RetrieveRefundsList, Scope, api_key_digest, legacy_key, password_sha1_hex,
};
use refunds_gateway::rest::{self, JsonOperation, RestCall};
use refunds_gateway::shop::ShopData;
use refunds_gateway::soap::envelope::{self, Element, SoapVersion, XmlLimits};
use refunds_gateway::soap::{self, SoapCall};
use refunds_gateway::store::{self, Database};

/// The operations whose request fixtures are parsed and bound.
const OPERATIONS: [&str; 3] = [
    GetRefundStatusOp::NAME,
    AddManualRefundOp::NAME,
    RetrieveRefundsListOp::NAME,
];

const SOAP11_CONTENT_TYPE: &str = "text/xml; charset=utf-8";

/// The fixtures' user (`tester` / `secret`) and an API key with every scope.
const TEST_LOGIN: &str = "tester";
const TEST_PASSWORD: &str = "secret";
const API_KEY: &str = "rgk_bench_key_with_every_scope";

/// An order beside the test shop's, with one payment so large that the timed addManualRefund
/// (0.01 PLN a call) cannot run out of refundable money: 10^10 calls.
const BENCH_ORDER: i64 = 9001;
const BENCH_SHOP: &str = r#"{"orders": [{"orderId": 9001, "currency": "PLN", "fulfilled": false,
  "payments": [{"paymentId": 9101, "amount": "100000000.00", "currency": "PLN",
    "paymentFormId": 2, "autoRefund": false, "paidAt": "2026-11-19 09:00:00"}]},
  {"orderId": 9002, "currency": "PLN", "fulfilled": false,
  "payments": [{"paymentId": 9102, "amount": "100000000.00", "currency": "PLN",
    "paymentFormId": 2, "autoRefund": true, "externalTransactionId": "BENCH-9102",
    "paidAt": "2026-11-19 09:00:00"}]}]}"#;

/// The order and payment of [`BENCH_SHOP`] that automatic refunds are drawn from.
const BENCH_AUTO_ORDER: i64 = 9002;
const BENCH_AUTO_PAYMENT: i64 = 9102;

/// Writes sent at once in the `writer` group: as many as benches/load's connections.
const CONCURRENT_WRITES: usize = 64;

/// getRefundStatus over REST, the same refund as the SOAP fixture (refund 22, Processing).
const REST_STATUS_QUERY: &str = "sourceType=order&sourceId=2001&paymentId=22";

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The local date of [`fixed_now`]: the day the fixtures' legacy keys were made for.
const FIXTURE_DAY: &str = "20261120";

/// The instant of the fixtures: 2026-11-20 12:00:00 in Warsaw.
fn fixed_now() -> i64 {
    parse_local_datetime("2026-11-20 12:00:00", chrono_tz::Europe::Warsaw).expect("valid time")
}

fn request_fixture(operation: &str) -> Vec<u8> {
    let path = fixtures_dir()
        .join("soap")
        .join(operation)
        .join("success.request.xml");
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The addManualRefund fixture turned to 0.01 PLN against [`BENCH_ORDER`], so that it can be
/// sent any number of times (the fixture's own return 601 is worth 40.00 PLN).
fn repeatable_manual_refund() -> Vec<u8> {
    let fixture = String::from_utf8(request_fixture(AddManualRefundOp::NAME)).expect("UTF-8");
    let fixture_params = "<r:sourceType>return</r:sourceType><r:sourceId>601</r:sourceId>\
                          <r:refundValue>10.00</r:refundValue>";
    assert!(
        fixture.contains(fixture_params),
        "the addManualRefund fixture changed; update repeatable_manual_refund"
    );
    let params = format!(
        "<r:sourceType>order</r:sourceType><r:sourceId>{BENCH_ORDER}</r:sourceId>\
         <r:refundValue>0.01</r:refundValue>"
    );
    fixture.replace(fixture_params, &params).into_bytes()
}

fn soap_call(body: &[u8]) -> SoapCall<'_> {
    SoapCall {
        body,
        content_type: Some(SOAP11_CONTENT_TYPE),
        api_key: None,
        idempotency_key: None,
        request_id: None,
    }
}

fn rest_status_call() -> RestCall<'static> {
    RestCall {
        method: "GET",
        operation: GetRefundStatusOp::NAME,
        query: REST_STATUS_QUERY,
        api_key: Some(API_KEY.to_owned()),
        idempotency_key: None,
        request_id: None,
        body: b"",
    }
}

/// Panics unless `reply` is a successful answer (HTTP 200, faultCode 0).
fn assert_soap_ok(what: &str, reply: &soap::SoapReply) {
    assert!(
        reply.status == 200
            && reply.outcome == Outcome::Ok
            && reply.body.contains("<faultCode>0</faultCode>"),
        "{what} did not succeed: {reply:?}"
    );
}

fn assert_rest_ok(what: &str, reply: &rest::JsonReply) {
    assert!(
        reply.status == 200 && !reply.body.contains("\"errors\""),
        "{what} did not succeed: {reply:?}"
    );
}

/// The `params` element of a pre-parsed request, as `soap::handle` hands it to `bind`.
fn params(envelope: &envelope::Envelope) -> &Element {
    let operation = &envelope.operation;
    operation.child("params").unwrap_or(operation)
}

/// The refund the getRefundStatus fixture asks about: refund 22 of order 2001 (Processing).
fn status_refund() -> RefundAt {
    RefundAt {
        source: SourceRef {
            source_type: SourceType::Order,
            id: 2001,
        },
        refund_id: 22,
    }
}

/// A service over a fresh SQLite file, loaded as described in the module comment.
struct LoadedService {
    service: RefundService,
    /// The same store with credentials checked against the ledger on every call.
    unremembering: RefundService,
    runtime: Runtime,
    _dir: tempfile::TempDir,
}

impl LoadedService {
    fn new(limits: &XmlLimits) -> LoadedService {
        LoadedService::new_in(limits, Path::new(env!("CARGO_TARGET_TMPDIR")))
    }

    /// The same, with its database file under `parent`.
    fn new_in(limits: &XmlLimits, parent: &Path) -> LoadedService {
        let timezone = chrono_tz::Europe::Warsaw;
        let dir = tempfile::Builder::new()
            .prefix("hot_paths-")
            .tempdir_in(parent)
            .expect("temporary directory");
        let path = dir.path().join("refunds.db");

        let database = Database::Sqlite(path.clone());
        let mut maintenance = store::maintenance(&database).expect("open the database");
        let test_shop =
            std::fs::read_to_string(fixtures_dir().join("test-shop.json")).expect("test shop");
        let shop = ShopData::parse(&test_shop, timezone).expect("the test shop parses");
        maintenance
            .import_shop(&shop)
            .expect("import the test shop");
        let user = ApiUser {
            login: TEST_LOGIN.to_owned(),
            password_sha1_hex: password_sha1_hex(TEST_PASSWORD),
            scopes: Scopes::ALL,
        };
        maintenance
            .put_api_user(&user, fixed_now())
            .expect("add the user");
        maintenance
            .create_api_key("bench", &api_key_digest(API_KEY), Scopes::ALL, fixed_now())
            .expect("add the key");
        drop(maintenance);

        let runtime = Runtime::new().expect("tokio runtime");
        let store = store::open(&database).expect("open the store");
        let operators = OperatorsConfig::default()
            .build()
            .expect("the default (sandbox) operators");
        // No outbox worker runs: a confirmed automatic refund stays Processing, as in the
        // fixtures.
        let service = RefundService::new(
            store.clone(),
            Clock::Fixed(fixed_now()),
            timezone,
            Policy::new(operators.routing.clone()),
        );
        let unremembering = RefundService::new(
            store,
            Clock::Fixed(fixed_now()),
            timezone,
            Policy {
                credentials_ttl: Duration::ZERO,
                ..Policy::new(operators.routing.clone())
            },
        );

        let mut setup: Vec<PathBuf> = std::fs::read_dir(fixtures_dir().join("soap/_setup"))
            .expect("setup requests")
            .map(|entry| entry.expect("setup entry").path())
            .collect();
        setup.sort();
        for request in setup {
            let body = std::fs::read(&request).expect("setup request");
            let reply = runtime.block_on(soap::handle(&service, soap_call(&body), limits));
            assert_soap_ok(&request.display().to_string(), &reply);
        }
        // Payments and refunds share one id sequence, so the bench order is imported after the
        // setup requests: their refunds keep the ids the fixtures name (20, 21, 22, …).
        let shop = ShopData::parse(BENCH_SHOP, timezone).expect("the bench order parses");
        store::maintenance(&database)
            .and_then(|mut maintenance| maintenance.import_shop(&shop))
            .expect("import the bench order");
        LoadedService {
            service,
            unremembering,
            runtime,
            _dir: dir,
        }
    }

    /// A real getRefundStatus answer.
    fn status_answer(&self) -> RefundStatusView {
        self.runtime
            .block_on(self.service.get_refund_status(status_refund()))
            .expect("refund 22 exists")
    }

    /// A real retrieveRefundsList page of 10 refunds (after adding enough New ones).
    fn list_page(&self, limits: &XmlLimits) -> RefundsPage {
        let manual = repeatable_manual_refund();
        for _ in 0..10 {
            let reply =
                self.runtime
                    .block_on(soap::handle(&self.service, soap_call(&manual), limits));
            assert_soap_ok("adding a refund for the list", &reply);
        }
        let request = RetrieveRefundsList::new(SourceFilter::All, 0, 10).expect("valid page");
        let page = self
            .runtime
            .block_on(self.service.retrieve_refunds_list(request))
            .expect("the list answers");
        assert_eq!(page.refunds.len(), 10, "a page of 10 refunds");
        page
    }
}

fn hot_paths(c: &mut Criterion) {
    let limits = XmlLimits::default();
    let inputs: Vec<(&str, Vec<u8>)> = OPERATIONS
        .iter()
        .map(|&operation| (operation, request_fixture(operation)))
        .collect();

    let mut group = c.benchmark_group("prepass");
    for (operation, body) in &inputs {
        let parsed = envelope::parse(body, &limits, Some(SOAP11_CONTENT_TYPE));
        assert!(parsed.is_ok(), "{operation}: {parsed:?}");
        group.bench_function(*operation, |b| {
            b.iter(|| envelope::parse(black_box(body), &limits, Some(SOAP11_CONTENT_TYPE)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("bind");
    for (operation, body) in &inputs {
        let parsed = envelope::parse(body, &limits, Some(SOAP11_CONTENT_TYPE)).expect("parses");
        let tree = params(&parsed);
        match *operation {
            GetRefundStatusOp::NAME => {
                GetRefundStatusOp::bind(tree).expect("binds");
                group.bench_function(*operation, |b| {
                    b.iter(|| GetRefundStatusOp::bind(black_box(tree)))
                });
            }
            AddManualRefundOp::NAME => {
                AddManualRefundOp::bind(tree).expect("binds");
                group.bench_function(*operation, |b| {
                    b.iter(|| AddManualRefundOp::bind(black_box(tree)))
                });
            }
            RetrieveRefundsListOp::NAME => {
                RetrieveRefundsListOp::bind(tree).expect("binds");
                group.bench_function(*operation, |b| {
                    b.iter(|| RetrieveRefundsListOp::bind(black_box(tree)))
                });
            }
            other => unreachable!("no binding benchmark for {other}"),
        }
    }
    group.finish();

    let loaded = LoadedService::new(&limits);
    let timezone = loaded.service.timezone();

    let status = loaded.status_answer();
    let page = loaded.list_page(&limits);
    let mut group = c.benchmark_group("write");
    let status_outcome = Ok(status.clone());
    group.bench_function("soap_getRefundStatus", |b| {
        b.iter(|| {
            soap::response::<GetRefundStatusOp>(
                SoapVersion::V11,
                black_box(&status_outcome),
                timezone,
            )
        })
    });
    let page_outcome = Ok(page.clone());
    group.bench_function("soap_retrieveRefundsList_10", |b| {
        b.iter(|| {
            soap::response::<RetrieveRefundsListOp>(
                SoapVersion::V11,
                black_box(&page_outcome),
                timezone,
            )
        })
    });
    group.bench_function("rest_getRefundStatus", |b| {
        b.iter(|| {
            Value::Object(GetRefundStatusOp::result_json(black_box(&status), timezone)).to_string()
        })
    });
    group.bench_function("rest_retrieveRefundsList_10", |b| {
        b.iter(|| {
            Value::Object(RetrieveRefundsListOp::result_json(
                black_box(&page),
                timezone,
            ))
            .to_string()
        })
    });
    group.finish();

    let status_body = request_fixture(GetRefundStatusOp::NAME);
    let manual_body = repeatable_manual_refund();
    let service = &loaded.service;
    let runtime = &loaded.runtime;
    assert_soap_ok(
        "SOAP getRefundStatus",
        &runtime.block_on(soap::handle(service, soap_call(&status_body), &limits)),
    );
    assert_soap_ok(
        "SOAP addManualRefund",
        &runtime.block_on(soap::handle(service, soap_call(&manual_body), &limits)),
    );
    assert_rest_ok(
        "REST getRefundStatus",
        &runtime.block_on(rest::handle_rest(service, rest_status_call())),
    );

    // The service's two store reads of a SOAP getRefundStatus, each on its own: the caller's
    // user, then the refund.
    let at = status_refund();
    let credentials = Credentials::Legacy(LegacyCredentials {
        login: TEST_LOGIN.to_owned(),
        key: legacy_key(FIXTURE_DAY, &password_sha1_hex(TEST_PASSWORD)),
    });
    let origin = Origin {
        channel: Channel::Soap,
        request_id: None,
    };
    runtime
        .block_on(service.authenticate(Some(credentials.clone()), Scope::Read, origin.clone()))
        .expect("the test user authenticates");
    let mut group = c.benchmark_group("service");
    group.bench_function("authenticate_legacy_remembered", |b| {
        b.to_async(runtime).iter(|| {
            service.authenticate(
                Some(black_box(credentials.clone())),
                Scope::Read,
                origin.clone(),
            )
        })
    });
    let unremembering = &loaded.unremembering;
    group.bench_function("authenticate_legacy_checked", |b| {
        b.to_async(runtime).iter(|| {
            unremembering.authenticate(
                Some(black_box(credentials.clone())),
                Scope::Read,
                origin.clone(),
            )
        })
    });
    group.bench_function("get_refund_status", |b| {
        b.to_async(runtime)
            .iter(|| service.get_refund_status(black_box(at)))
    });
    group.finish();

    let mut group = c.benchmark_group("end_to_end");
    group.bench_function("soap_getRefundStatus", |b| {
        b.to_async(runtime)
            .iter(|| soap::handle(service, soap_call(black_box(&status_body)), &limits))
    });
    // One durable write (synchronous=FULL) waiting alone for its commit: the time is dominated
    // by the commit's fsync, so this is the latency of one write on its own, not the throughput
    // of group commit under concurrent writers (benches/load measures that). Each call adds a
    // 0.01 PLN refund to BENCH_ORDER, which cannot run out.
    group.bench_function("soap_addManualRefund", |b| {
        b.to_async(runtime)
            .iter(|| soap::handle(service, soap_call(black_box(&manual_body)), &limits))
    });
    group.bench_function("rest_getRefundStatus", |b| {
        b.to_async(runtime)
            .iter(|| rest::handle_rest(service, black_box(rest_status_call())))
    });
    group.finish();

    writer_benches(c, "writer", service, runtime);
    drop(loaded);
    // The same on a file in memory (tmpfs), where an fsync costs nothing: what remains is the
    // writer thread's CPU per write, commit and checkpoint included, without the disk's latency.
    let in_memory = Path::new("/dev/shm");
    if in_memory.is_dir() {
        let loaded = LoadedService::new_in(&limits, in_memory);
        writer_benches(c, "writer_tmpfs", &loaded.service, &loaded.runtime);
    }
}

/// The `writer` group (see the module comment) under the name `group`.
fn writer_benches(c: &mut Criterion, group: &str, service: &RefundService, runtime: &Runtime) {
    let caller = Caller {
        login: TEST_LOGIN.to_owned(),
        scopes: Scopes::ALL,
        channel: Channel::Soap,
        request_id: None,
    };
    let cent = || RequestedAmount {
        value: Decimal::new(1, 2),
        currency: "PLN".to_owned(),
    };
    let manual = AddManualRefund {
        source: SourceRef {
            source_type: SourceType::Order,
            id: BENCH_ORDER,
        },
        amount: cent(),
        details: ManualDetails {
            payment_form_id: 2,
            payment_system: None,
            account: None,
            client_account: None,
        },
    };
    let automatic = AddAutomaticRefundForOrder {
        order_id: BENCH_AUTO_ORDER,
        payment_id: BENCH_AUTO_PAYMENT,
        amount: cent(),
    };
    let add_automatic = || {
        let futures = (0..CONCURRENT_WRITES)
            .map(|_| service.add_automatic_refund_for_order(&caller, automatic.clone(), None));
        async move {
            join_all(futures)
                .await
                .into_iter()
                .map(|answer| match answer {
                    Answer::Fresh(Ok(id)) => id,
                    _ => panic!("an automatic refund was refused"),
                })
                .collect::<Vec<_>>()
        }
    };
    // Every timed write must succeed: run each kind once first.
    runtime.block_on(async {
        for answer in join_all(
            (0..CONCURRENT_WRITES)
                .map(|_| service.add_manual_refund(&caller, manual.clone(), None)),
        )
        .await
        {
            assert!(
                matches!(answer, Answer::Fresh(Ok(_))),
                "addManualRefund failed"
            );
        }
        let added = add_automatic().await;
        for answer in join_all(
            added
                .into_iter()
                .map(|refund_id| service.confirm_refund(&caller, auto_refund_at(refund_id), None)),
        )
        .await
        {
            assert!(
                matches!(answer, Answer::Fresh(Ok(true))),
                "confirmRefund failed"
            );
        }
    });

    let mut group = c.benchmark_group(group);
    group.throughput(Throughput::Elements(CONCURRENT_WRITES as u64));
    group.bench_function(format!("addManualRefund_{CONCURRENT_WRITES}"), |b| {
        b.to_async(runtime).iter(|| {
            join_all(
                (0..CONCURRENT_WRITES)
                    .map(|_| service.add_manual_refund(&caller, black_box(manual.clone()), None)),
            )
        })
    });
    group.bench_function(
        format!("addAutomaticRefundForOrder_{CONCURRENT_WRITES}"),
        |b| b.to_async(runtime).iter(add_automatic),
    );
    // Each round confirms 64 refunds added just before it, untimed.
    group.bench_function(format!("confirmRefund_{CONCURRENT_WRITES}"), |b| {
        b.iter_custom(|rounds| {
            let mut confirming = Duration::ZERO;
            for _ in 0..rounds {
                let added = runtime.block_on(add_automatic());
                let started = Instant::now();
                runtime.block_on(join_all(added.into_iter().map(|refund_id| {
                    service.confirm_refund(&caller, auto_refund_at(refund_id), None)
                })));
                confirming += started.elapsed();
            }
            confirming
        })
    });
    group.finish();
}

/// An automatic refund of [`BENCH_AUTO_ORDER`].
fn auto_refund_at(refund_id: i64) -> RefundAt {
    RefundAt {
        source: SourceRef {
            source_type: SourceType::Order,
            id: BENCH_AUTO_ORDER,
        },
        refund_id,
    }
}

/// One request's log lines at the default level, as `server` logs them.
fn request_log_lines() {
    let span = tracing::info_span!(
        "request",
        id = 1_u64,
        method = %"POST",
        path = %"/soap/refunds",
        operation = tracing::field::Empty
    );
    let _entered = span.enter();
    span.record("operation", "getRefundStatus");
    tracing::info!(status = 200_u16, elapsed_us = 120_u64, "answered");
}

fn log_writers(c: &mut Criterion) {
    let devnull = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .expect("/dev/null")
    };
    let subscriber = || {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_ansi(false)
    };
    let mut group = c.benchmark_group("log");
    group.bench_function("direct", |b| {
        let direct = subscriber()
            .with_writer(std::sync::Mutex::new(devnull()))
            .finish();
        tracing::subscriber::with_default(direct, || b.iter(request_log_lines));
    });
    group.bench_function("log_output", |b| {
        let (output, _guard) = LogOutput::start_on(Box::new(devnull()));
        let buffered = subscriber().with_writer(output).finish();
        tracing::subscriber::with_default(buffered, || b.iter(request_log_lines));
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        // Plotting (plotters: no gnuplot here) costs seconds per benchmark; the terminal output
        // and the estimates in target/criterion are what we read.
        .without_plots()
}

criterion_group! {
    name = benches;
    config = config();
    targets = hot_paths, log_writers
}
criterion_main!(benches);
