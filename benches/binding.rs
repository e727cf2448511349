//! How should SOAP request payloads be bound to typed requests? Three ways, measured on the same
//! inputs (the project's request fixtures, plus a nesting-depth series built from one of them):
//!
//! 1. `crate`   — the crate's own path: `soap::envelope::parse` (one streaming quick-xml pass that
//!    builds a small tree of the Body's operation element by local name) then
//!    `<Op as Operation>::bind(params)`.
//! 2. `serde`   — quick-xml's serde deserializer (`quick_xml::de::from_str`, feature `serialize`,
//!    dev-only) into `#[derive(Deserialize)]` structs mirroring the envelope, then a conversion of
//!    those DTOs into the same domain requests, with the same rules as `operations.rs`.
//! 3. `yaserde` — yaserde 0.13 (`#[derive(YaDeserialize)]`, xml-rs underneath) into structs with
//!    the namespace attributes it needs, then the same conversion.
//!
//! Before measuring, the bench prints: whether the three ways agree on every request fixture of
//! the benchmarked operations (the timed inputs must agree, or the bench panics); how each way
//! copes with namespace prefixes, default namespaces, unqualified children, `xsi:nil` and a few
//! other shapes real SOAP clients send (with the raw DTO values under `xsi:nil`); and an
//! interleaved min-of-batches timing that stays stable when the machine is busy. Then criterion
//! measures each input × way (`binding/{operation}/success/{way}`, `binding/depth/{way}/{n}`).
//!
//! Run: `cargo bench --bench binding` (about 100 s on 2 cores; medians land in
//! `target/criterion/*/*/new/estimates.json`). `cargo test --benches` only smoke-tests it.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use quick_xml::Reader;
use quick_xml::events::Event;
use rust_decimal::Decimal;

use refunds_gateway::operations::{
    AddManualRefundOp, GetRefundStatusOp, Operation, RetrieveRefundsListOp,
};
use refunds_gateway::refunds::types::{
    ManualDetails, RequestedAmount, SourceFilter, SourceRef, SourceType,
};
use refunds_gateway::refunds::{AddManualRefund, MAX_RESULTS_LIMIT, RefundAt, RetrieveRefundsList};
use refunds_gateway::soap::envelope::{self, XmlLimits};

const SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const TARGET: &str = "urn:refunds-gateway:refunds";

/// The operations the bench binds; their fixtures are the inputs.
const OPERATIONS: [&str; 3] = [
    AddManualRefundOp::NAME,
    GetRefundStatusOp::NAME,
    RetrieveRefundsListOp::NAME,
];

/// Extra nesting levels of an ignored element inside `params` (the crate's depth limit is 32;
/// 24 extra levels put the innermost element at depth 29).
const DEPTHS: [usize; 4] = [1, 8, 16, 24];

// ------------------------------------------------------------------------------------------------
// The typed output every way must produce.

/// What a request binds to: the credentials (as `soap::credentials` picks them) and the request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bound {
    credentials: Option<(String, String)>,
    request: Request,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Request {
    AddManualRefund(AddManualRefund),
    GetRefundStatus(RefundAt),
    RetrieveRefundsList(RetrieveRefundsList),
}

type Outcome = Result<Bound, String>;

fn summary(outcome: &Outcome) -> String {
    let bound = match outcome {
        Ok(bound) => bound,
        Err(error) => return format!("ERR {}", shorten(error, 70)),
    };
    let who = match &bound.credentials {
        Some((login, _)) => login.as_str(),
        None => "-",
    };
    let what = match &bound.request {
        Request::AddManualRefund(r) => format!(
            "{}:{} {} {} form={} acct={:?}",
            r.source.source_type.as_str(),
            r.source.id,
            r.amount.value,
            r.amount.currency,
            r.details.payment_form_id,
            r.details.account.as_deref().map(|a| shorten(a, 8)),
        ),
        Request::GetRefundStatus(r) => format!(
            "{}:{} refund={}",
            r.source.source_type.as_str(),
            r.source.id,
            r.refund_id
        ),
        Request::RetrieveRefundsList(r) => {
            format!("{:?} page={} limit={}", r.filter(), r.page(), r.limit())
        }
    };
    format!("ok   user={who} {what}")
}

fn shorten(text: &str, max: usize) -> String {
    let text = text.replace('\n', " ");
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

// ------------------------------------------------------------------------------------------------
// Way 1: the crate's envelope pre-pass + `Operation::bind`.

fn crate_way(body: &[u8], limits: &XmlLimits) -> Outcome {
    let parsed = envelope::parse(body, limits, None).map_err(|fault| format!("{fault:?}"))?;
    let operation = &parsed.operation;
    let credentials = refunds_gateway::operations::legacy_credentials(operation)
        .map(|credentials| (credentials.login, credentials.key));
    // As `soap::run`: document/literal wrapped uses `params`, rpc-style clients may omit it.
    let params = operation.child("params").unwrap_or(operation);
    let request = match operation.name.as_str() {
        AddManualRefundOp::NAME => Request::AddManualRefund(
            AddManualRefundOp::bind(params).map_err(|error| error.to_string())?,
        ),
        GetRefundStatusOp::NAME => Request::GetRefundStatus(
            GetRefundStatusOp::bind(params).map_err(|error| error.to_string())?,
        ),
        RetrieveRefundsListOp::NAME => Request::RetrieveRefundsList(
            RetrieveRefundsListOp::bind(params).map_err(|error| error.to_string())?,
        ),
        other => return Err(format!("unknown operation '{other}'")),
    };
    Ok(Bound {
        credentials,
        request,
    })
}

// ------------------------------------------------------------------------------------------------
// The DTOs shared by ways 2 and 3 below `params`/`authenticate`: every leaf is an optional
// string, as in the crate, so that absent, empty and malformed values are judged by the same
// conversion rules (mirroring `operations.rs`) rather than by each library's own parsing.
// Each struct derives both serde's `Deserialize` and yaserde's `YaDeserialize`; yaserde needs
// every field's namespace (`prefix` + `namespaces`), serde ignores namespaces entirely.

mod dto {
    use serde::Deserialize;
    use yaserde::YaDeserialize;

    #[derive(Debug, Default, Deserialize, YaDeserialize)]
    #[yaserde(namespaces = { "r" = "urn:refunds-gateway:refunds" })]
    pub struct Authenticate {
        #[serde(rename = "userLogin")]
        #[yaserde(rename = "userLogin", prefix = "r")]
        pub user_login: Option<String>,
        #[serde(rename = "authenticateKey")]
        #[yaserde(rename = "authenticateKey", prefix = "r")]
        pub authenticate_key: Option<String>,
        #[yaserde(prefix = "r")]
        pub system_login: Option<String>,
        #[yaserde(prefix = "r")]
        pub system_key: Option<String>,
    }

    #[derive(Debug, Default, Deserialize, YaDeserialize)]
    #[yaserde(namespaces = { "r" = "urn:refunds-gateway:refunds" })]
    pub struct RefundDetails {
        #[serde(rename = "paymentFormId")]
        #[yaserde(rename = "paymentFormId", prefix = "r")]
        pub payment_form_id: Option<String>,
        #[serde(rename = "paymentSystem")]
        #[yaserde(rename = "paymentSystem", prefix = "r")]
        pub payment_system: Option<String>,
        #[yaserde(prefix = "r")]
        pub account: Option<String>,
        #[serde(rename = "clientAccount")]
        #[yaserde(rename = "clientAccount", prefix = "r")]
        pub client_account: Option<String>,
    }

    #[derive(Debug, Default, Deserialize, YaDeserialize)]
    #[yaserde(namespaces = { "r" = "urn:refunds-gateway:refunds" })]
    pub struct ManualParams {
        #[serde(rename = "sourceType")]
        #[yaserde(rename = "sourceType", prefix = "r")]
        pub source_type: Option<String>,
        #[serde(rename = "sourceId")]
        #[yaserde(rename = "sourceId", prefix = "r")]
        pub source_id: Option<String>,
        #[serde(rename = "refundValue")]
        #[yaserde(rename = "refundValue", prefix = "r")]
        pub refund_value: Option<String>,
        #[serde(rename = "refundCurrency")]
        #[yaserde(rename = "refundCurrency", prefix = "r")]
        pub refund_currency: Option<String>,
        #[serde(rename = "refundDetails")]
        #[yaserde(rename = "refundDetails", prefix = "r")]
        pub refund_details: Option<RefundDetails>,
    }

    #[derive(Debug, Default, Deserialize, YaDeserialize)]
    #[yaserde(namespaces = { "r" = "urn:refunds-gateway:refunds" })]
    pub struct StatusParams {
        #[serde(rename = "sourceType")]
        #[yaserde(rename = "sourceType", prefix = "r")]
        pub source_type: Option<String>,
        #[serde(rename = "sourceId")]
        #[yaserde(rename = "sourceId", prefix = "r")]
        pub source_id: Option<String>,
        #[serde(rename = "paymentId")]
        #[yaserde(rename = "paymentId", prefix = "r")]
        pub payment_id: Option<String>,
    }

    #[derive(Debug, Default, Deserialize, YaDeserialize)]
    #[yaserde(namespaces = { "r" = "urn:refunds-gateway:refunds" })]
    pub struct ListParams {
        #[serde(rename = "sourceType")]
        #[yaserde(rename = "sourceType", prefix = "r")]
        pub source_type: Option<String>,
        #[serde(rename = "resultsPage")]
        #[yaserde(rename = "resultsPage", prefix = "r")]
        pub results_page: Option<String>,
        #[serde(rename = "resultsLimit")]
        #[yaserde(rename = "resultsLimit", prefix = "r")]
        pub results_limit: Option<String>,
    }

    #[derive(Debug, Default, Deserialize, YaDeserialize)]
    #[yaserde(namespaces = { "r" = "urn:refunds-gateway:refunds" })]
    pub struct ManualCall {
        #[yaserde(prefix = "r")]
        pub authenticate: Option<Authenticate>,
        #[yaserde(prefix = "r")]
        pub params: Option<ManualParams>,
    }

    #[derive(Debug, Default, Deserialize, YaDeserialize)]
    #[yaserde(namespaces = { "r" = "urn:refunds-gateway:refunds" })]
    pub struct StatusCall {
        #[yaserde(prefix = "r")]
        pub authenticate: Option<Authenticate>,
        #[yaserde(prefix = "r")]
        pub params: Option<StatusParams>,
    }

    #[derive(Debug, Default, Deserialize, YaDeserialize)]
    #[yaserde(namespaces = { "r" = "urn:refunds-gateway:refunds" })]
    pub struct ListCall {
        #[yaserde(prefix = "r")]
        pub authenticate: Option<Authenticate>,
        #[yaserde(prefix = "r")]
        pub params: Option<ListParams>,
    }
}

/// The Body's operation, as either library hands it over.
enum Call<'a> {
    Manual(&'a dto::ManualCall),
    Status(&'a dto::StatusCall),
    List(&'a dto::ListCall),
}

/// `Soap{Body{one of the operations}}` → the same [`Bound`] as the crate produces.
fn convert(call: Option<Call<'_>>) -> Outcome {
    let (authenticate, request) = match call {
        None => return Err("the Body holds no known operation element".to_owned()),
        Some(Call::Manual(call)) => (&call.authenticate, manual(call.params.as_ref())?),
        Some(Call::Status(call)) => (&call.authenticate, status(call.params.as_ref())?),
        Some(Call::List(call)) => (&call.authenticate, list(call.params.as_ref())?),
    };
    Ok(Bound {
        credentials: authenticate.as_ref().and_then(dto_credentials),
        request,
    })
}

fn dto_credentials(authenticate: &dto::Authenticate) -> Option<(String, String)> {
    let first = |a: &Option<String>, b: &Option<String>| text(a).or_else(|| text(b));
    Some((
        first(&authenticate.user_login, &authenticate.system_login)?,
        first(&authenticate.authenticate_key, &authenticate.system_key)?,
    ))
}

fn manual(params: Option<&dto::ManualParams>) -> Result<Request, String> {
    let params = params.ok_or_else(|| missing("params"))?;
    let details = params
        .refund_details
        .as_ref()
        .ok_or_else(|| missing("refundDetails"))?;
    Ok(Request::AddManualRefund(AddManualRefund {
        source: source(&params.source_type, &params.source_id)?,
        amount: amount(&params.refund_value, &params.refund_currency)?,
        details: ManualDetails {
            payment_form_id: required_id(&details.payment_form_id, "refundDetails.paymentFormId")?,
            payment_system: optional_id(&details.payment_system, "refundDetails.paymentSystem")?,
            account: text(&details.account),
            client_account: text(&details.client_account),
        },
    }))
}

fn status(params: Option<&dto::StatusParams>) -> Result<Request, String> {
    let params = params.ok_or_else(|| missing("params"))?;
    Ok(Request::GetRefundStatus(RefundAt {
        source: source(&params.source_type, &params.source_id)?,
        refund_id: required_id(&params.payment_id, "paymentId")?,
    }))
}

fn list(params: Option<&dto::ListParams>) -> Result<Request, String> {
    let params = params.ok_or_else(|| missing("params"))?;
    let word = text(&params.source_type).ok_or_else(|| missing("sourceType"))?;
    let filter = if word == "all" {
        SourceFilter::All
    } else {
        SourceFilter::Only(source_type(&word)?)
    };
    let page = optional_u32(&params.results_page, "resultsPage")?.unwrap_or(0);
    let limit = optional_u32(&params.results_limit, "resultsLimit")?.unwrap_or(MAX_RESULTS_LIMIT);
    let list = RetrieveRefundsList::new(filter, page, limit).map_err(|e| e.to_string())?;
    Ok(Request::RetrieveRefundsList(list))
}

// The conversion rules of `operations.rs`, over `Option<String>` leaves.

fn missing(field: &str) -> String {
    format!("params.{field} is required")
}

fn text(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}

fn optional_id(value: &Option<String>, field: &str) -> Result<Option<i64>, String> {
    match text(value) {
        None => Ok(None),
        Some(text) => match text.parse::<i64>() {
            Ok(id) if id > 0 => Ok(Some(id)),
            _ => Err(format!(
                "params.{field} must be a positive integer, got '{text}'"
            )),
        },
    }
}

fn required_id(value: &Option<String>, field: &str) -> Result<i64, String> {
    optional_id(value, field)?.ok_or_else(|| missing(field))
}

fn optional_u32(value: &Option<String>, field: &str) -> Result<Option<u32>, String> {
    match text(value) {
        None => Ok(None),
        Some(text) => text
            .parse::<u32>()
            .map(Some)
            .map_err(|_| format!("params.{field} must be a non-negative integer, got '{text}'")),
    }
}

fn source_type(word: &str) -> Result<SourceType, String> {
    SourceType::parse(word).ok_or_else(|| format!("unknown source type '{word}'"))
}

fn source(kind: &Option<String>, id: &Option<String>) -> Result<SourceRef, String> {
    let word = text(kind).ok_or_else(|| missing("sourceType"))?;
    Ok(SourceRef {
        source_type: source_type(&word)?,
        id: required_id(id, "sourceId")?,
    })
}

fn amount(value: &Option<String>, currency: &Option<String>) -> Result<RequestedAmount, String> {
    let value = text(value).ok_or_else(|| missing("refundValue"))?;
    let parsed = if value.contains(['e', 'E']) {
        Decimal::from_scientific(&value)
    } else {
        Decimal::from_str(&value)
    };
    Ok(RequestedAmount {
        value: parsed
            .map_err(|_| format!("params.refundValue must be a decimal number, got '{value}'"))?,
        currency: text(currency).ok_or_else(|| missing("refundCurrency"))?,
    })
}

// ------------------------------------------------------------------------------------------------
// Way 2: quick-xml's serde deserializer. It matches elements by local name only (prefixes are
// stripped, namespace URIs never looked at), so no namespace attributes are needed or possible.

mod qx {
    use serde::Deserialize;
    use serde::de::IgnoredAny;

    use super::dto::{ListCall, ManualCall, StatusCall};

    #[derive(Debug, Deserialize)]
    pub struct Envelope {
        #[serde(rename = "Header")]
        pub _header: Option<IgnoredAny>,
        #[serde(rename = "Body")]
        pub body: Body,
    }

    #[derive(Debug, Deserialize)]
    pub struct Body {
        #[serde(rename = "addManualRefund")]
        pub add_manual_refund: Option<ManualCall>,
        #[serde(rename = "getRefundStatus")]
        pub get_refund_status: Option<StatusCall>,
        #[serde(rename = "retrieveRefundsList")]
        pub retrieve_refunds_list: Option<ListCall>,
    }
}

fn serde_way(body: &[u8]) -> Outcome {
    let text = std::str::from_utf8(body).map_err(|error| error.to_string())?;
    let envelope: qx::Envelope =
        quick_xml::de::from_str(text).map_err(|error| format!("serde: {error}"))?;
    let body = &envelope.body;
    convert(
        body.add_manual_refund
            .as_ref()
            .map(Call::Manual)
            .or(body.get_refund_status.as_ref().map(Call::Status))
            .or(body.retrieve_refunds_list.as_ref().map(Call::List)),
    )
}

// ------------------------------------------------------------------------------------------------
// Way 3: yaserde. It matches children by (namespace URI, local name): a field with
// `prefix = "r"` matches an element in `urn:refunds-gateway:refunds` whatever its prefix (or a
// default namespace); a field without a prefix matches only unqualified elements.

mod ya {
    use yaserde::YaDeserialize;

    use super::dto::{ListCall, ManualCall, StatusCall};

    #[derive(Debug, Default, YaDeserialize)]
    #[yaserde(
        rename = "Envelope",
        prefix = "soap",
        namespaces = { "soap" = "http://schemas.xmlsoap.org/soap/envelope/" }
    )]
    pub struct Envelope {
        #[yaserde(rename = "Body", prefix = "soap")]
        pub body: Body,
    }

    #[derive(Debug, Default, YaDeserialize)]
    #[yaserde(
        prefix = "soap",
        namespaces = {
            "soap" = "http://schemas.xmlsoap.org/soap/envelope/",
            "r" = "urn:refunds-gateway:refunds"
        }
    )]
    pub struct Body {
        #[yaserde(rename = "addManualRefund", prefix = "r")]
        pub add_manual_refund: Option<ManualCall>,
        #[yaserde(rename = "getRefundStatus", prefix = "r")]
        pub get_refund_status: Option<StatusCall>,
        #[yaserde(rename = "retrieveRefundsList", prefix = "r")]
        pub retrieve_refunds_list: Option<ListCall>,
    }
}

fn yaserde_way(body: &[u8]) -> Outcome {
    let envelope: ya::Envelope =
        yaserde::de::from_reader(body).map_err(|error| format!("yaserde: {error}"))?;
    let body = &envelope.body;
    convert(
        body.add_manual_refund
            .as_ref()
            .map(Call::Manual)
            .or(body.get_refund_status.as_ref().map(Call::Status))
            .or(body.retrieve_refunds_list.as_ref().map(Call::List)),
    )
}

// ------------------------------------------------------------------------------------------------
// Inputs.

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/soap")
}

/// `fixtures/soap/{operation}/*.request.xml`, sorted, `success` first.
fn fixtures(operation: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fixtures_dir().join(operation);
    let mut found: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with(".request.xml"))
        })
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.trim_end_matches(".request.xml");
            Some((format!("{operation}/{name}"), std::fs::read(&path).ok()?))
        })
        .collect();
    found.sort_by_key(|(name, _)| (!name.ends_with("/success"), name.clone()));
    found
}

/// The timed input of `operation`: its `success` fixture.
fn timed_input(operation: &str) -> (String, Vec<u8>) {
    let path = fixtures_dir().join(operation).join("success.request.xml");
    let bytes = std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    (format!("{operation}/success"), bytes)
}

/// `body` with `extra` levels of an unknown element (`ext`, in the same namespace as `params`),
/// holding one text leaf, inserted as the first child of `params`. Every way must skip it.
fn nested(body: &[u8], extra: usize) -> Vec<u8> {
    let mut reader = Reader::from_reader(body);
    let (at, prefix) = loop {
        match reader.read_event() {
            Ok(Event::Start(start)) if start.local_name().as_ref() == "params" => {
                let prefix = start
                    .name()
                    .prefix()
                    .map(|p| format!("{}:", p.as_ref()))
                    .unwrap_or_default();
                break (reader.buffer_position() as usize, prefix);
            }
            Ok(Event::Eof) | Err(_) => panic!("no <params> start tag to nest into"),
            _ => {}
        }
    };
    let mut out = body[..at].to_vec();
    for _ in 0..extra {
        out.extend_from_slice(format!("<{prefix}ext>").as_bytes());
    }
    out.extend_from_slice(format!("<{prefix}note>ignored</{prefix}note>").as_bytes());
    for _ in 0..extra {
        out.extend_from_slice(format!("</{prefix}ext>").as_bytes());
    }
    out.extend_from_slice(&body[at..]);
    out
}

// ------------------------------------------------------------------------------------------------
// Agreement and observations (not timed).

fn run_all(body: &[u8], limits: &XmlLimits) -> [Outcome; 3] {
    [crate_way(body, limits), serde_way(body), yaserde_way(body)]
}

/// Checks the three ways on every fixture of the benchmarked operations and prints a table;
/// panics if they disagree on a timed input.
fn agreement(limits: &XmlLimits, timed: &[(String, Vec<u8>)]) {
    println!("\n== Agreement on request fixtures (crate | serde | yaserde) ==");
    for (name, body) in OPERATIONS.iter().flat_map(|operation| fixtures(operation)) {
        report(&name, &body, limits);
    }
    for (name, body) in timed {
        let [ours, serde, yaserde] = run_all(body, limits);
        assert!(ours.is_ok(), "{name}: the crate's way failed: {ours:?}");
        assert_eq!(ours, serde, "{name}: serde disagrees with the crate");
        assert_eq!(ours, yaserde, "{name}: yaserde disagrees with the crate");
    }
    println!("(all timed inputs bind to equal typed requests in the three ways)");
}

fn report(name: &str, body: &[u8], limits: &XmlLimits) {
    let [ours, serde, yaserde] = run_all(body, limits);
    let verdict = if ours == serde && ours == yaserde {
        "same"
    } else if ours.is_err() && serde.is_err() && yaserde.is_err() {
        "all-fail"
    } else {
        "DIFFER"
    };
    println!("[{verdict}] {name}");
    println!("    crate   {}", summary(&ours));
    if serde != ours {
        println!("    serde   {}", summary(&serde));
    }
    if yaserde != ours {
        println!("    yaserde {}", summary(&yaserde));
    }
}

/// Small envelopes that differ from the fixtures in one way each.
fn observations(limits: &XmlLimits) {
    const XSI: &str = "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"";
    let auth = "<r:authenticate><r:userLogin>tester</r:userLogin>\
                <r:authenticateKey>abc</r:authenticateKey></r:authenticate>";
    let leaves = "<r:sourceType>return</r:sourceType><r:sourceId>501</r:sourceId>\
                  <r:refundValue>10.00</r:refundValue><r:refundCurrency>PLN</r:refundCurrency>";
    let prefixed = |params: &str| {
        format!(
            "<soap:Envelope xmlns:soap=\"{SOAP11}\" xmlns:r=\"{TARGET}\" {XSI}><soap:Body>\
             <r:addManualRefund>{auth}<r:params>{params}</r:params></r:addManualRefund>\
             </soap:Body></soap:Envelope>"
        )
    };
    let details = |inner: &str| format!("<r:refundDetails>{inner}</r:refundDetails>");
    let form = "<r:paymentFormId>1</r:paymentFormId>";
    let unprefixed_ops = "<sourceType>return</sourceType><sourceId>501</sourceId>\
        <refundValue>10.00</refundValue><refundCurrency>PLN</refundCurrency>\
        <refundDetails><paymentFormId>1</paymentFormId><account>PL61</account></refundDetails>";
    let unprefixed_auth = "<authenticate><userLogin>tester</userLogin>\
        <authenticateKey>abc</authenticateKey></authenticate>";
    let cases: Vec<(&str, String)> = vec![
        (
            "baseline: soap: and r: prefixes",
            prefixed(&format!(
                "{leaves}{}",
                details(&format!("{form}<r:account>PL61</r:account>"))
            )),
        ),
        (
            "other prefixes (S:, ns2:), as JAX-WS writes",
            format!(
                "<S:Envelope xmlns:S=\"{SOAP11}\"><S:Body><ns2:addManualRefund xmlns:ns2=\"{TARGET}\">\
                 {}<ns2:params>{}</ns2:params></ns2:addManualRefund></S:Body></S:Envelope>",
                auth.replace("r:", "ns2:"),
                format!(
                    "{leaves}{}",
                    details(&format!("{form}<r:account>PL61</r:account>"))
                )
                .replace("r:", "ns2:")
            ),
        ),
        (
            "default namespaces, no prefixes at all",
            format!(
                "<Envelope xmlns=\"{SOAP11}\"><Body><addManualRefund xmlns=\"{TARGET}\">\
                 {unprefixed_auth}<params>{unprefixed_ops}</params></addManualRefund></Body></Envelope>"
            ),
        ),
        (
            "unqualified children (elementFormDefault=unqualified)",
            format!(
                "<soap:Envelope xmlns:soap=\"{SOAP11}\" xmlns:r=\"{TARGET}\"><soap:Body>\
                 <r:addManualRefund>{unprefixed_auth}<params>{unprefixed_ops}</params>\
                 </r:addManualRefund></soap:Body></soap:Envelope>"
            ),
        ),
        (
            "children in a foreign namespace",
            format!(
                "<soap:Envelope xmlns:soap=\"{SOAP11}\" xmlns:r=\"{TARGET}\" xmlns:x=\"urn:other\">\
                 <soap:Body><r:addManualRefund>{auth}<r:params>{}</r:params></r:addManualRefund>\
                 </soap:Body></soap:Envelope>",
                format!("{leaves}{}", details(form)).replace("r:sourceId", "x:sourceId")
            ),
        ),
        (
            "SOAP 1.2 envelope",
            prefixed(&format!("{leaves}{}", details(form))).replace(SOAP11, envelope::SOAP12_NS),
        ),
        (
            "Header with a mustUnderstand block",
            prefixed(&format!("{leaves}{}", details(form))).replace(
                "<soap:Body>",
                "<soap:Header><r:trace soap:mustUnderstand=\"1\">x</r:trace></soap:Header><soap:Body>",
            ),
        ),
        (
            "xsi:nil=\"true\" on an optional leaf (account)",
            prefixed(&format!(
                "{leaves}{}",
                details(&format!("{form}<r:account xsi:nil=\"true\"/>"))
            )),
        ),
        (
            "xsi:nil=\"true\" on an optional leaf that has text",
            prefixed(&format!(
                "{leaves}{}",
                details(&format!("{form}<r:account xsi:nil=\"true\">PL61</r:account>"))
            )),
        ),
        (
            "xsi:nil=\"true\" on a required leaf (sourceId)",
            prefixed(&format!("{}{}", leaves, details(form)).replace(
                "<r:sourceId>501</r:sourceId>",
                "<r:sourceId xsi:nil=\"true\"/>",
            )),
        ),
        (
            "xsi:nil=\"true\" on the nested refundDetails",
            prefixed(&format!("{leaves}<r:refundDetails xsi:nil=\"true\"/>")),
        ),
        (
            "xsi:nil=\"true\" on authenticate",
            prefixed(&format!("{leaves}{}", details(form))).replace(
                "<r:authenticate>",
                "<r:authenticate xsi:nil=\"true\">",
            ),
        ),
        (
            "xsi:type attributes and padded text",
            prefixed(&format!(
                "{}{}",
                leaves.replace(
                    "<r:sourceId>501</r:sourceId>",
                    "<r:sourceId xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" \
                     xsi:type=\"xsd:int\">\n  501 \n</r:sourceId>"
                ),
                details(form)
            )),
        ),
        (
            "CDATA and a character reference in a value",
            prefixed(&format!(
                "{leaves}{}",
                details(&format!(
                    "{form}<r:account><![CDATA[PL61]]>&#x31;</r:account>"
                ))
            )),
        ),
        (
            "rpc style: no params wrapper",
            prefixed(&format!("{leaves}{}", details(form)))
                .replace("<r:params>", "")
                .replace("</r:params>", ""),
        ),
        (
            "a DOCTYPE with an internal entity",
            prefixed(&format!("{leaves}{}", details(form))).replacen(
                "<soap:Envelope",
                "<!DOCTYPE soap:Envelope [<!ENTITY e \"x\">]><soap:Envelope",
                1,
            ),
        ),
        (
            "params nested 40 levels deep in an ignored element (crate limit 32)",
            String::from_utf8(nested(
                prefixed(&format!("{leaves}{}", details(form))).as_bytes(),
                40,
            ))
            .expect("utf-8"),
        ),
    ];
    println!(
        "\n== Observations: namespaces, xsi:nil and other shapes (crate | serde | yaserde) =="
    );
    for (name, body) in &cases {
        report(name, body.as_bytes(), limits);
    }
    println!("\n== Raw DTO values under xsi:nil (before the empty-means-absent rule) ==");
    for (name, body) in cases.iter().filter(|(name, _)| name.contains("xsi:nil")) {
        println!("{name}");
        println!("    serde   {}", raw_serde(body));
        println!("    yaserde {}", raw_yaserde(body));
    }
    println!();
}

fn raw_serde(body: &str) -> String {
    match quick_xml::de::from_str::<qx::Envelope>(body) {
        Ok(envelope) => raw(envelope.body.add_manual_refund.as_ref()),
        Err(error) => format!("ERR {error}"),
    }
}

fn raw_yaserde(body: &str) -> String {
    match yaserde::de::from_str::<ya::Envelope>(body) {
        Ok(envelope) => raw(envelope.body.add_manual_refund.as_ref()),
        Err(error) => format!("ERR {error}"),
    }
}

fn raw(call: Option<&dto::ManualCall>) -> String {
    let Some(call) = call else {
        return "no addManualRefund".to_owned();
    };
    let params = call.params.as_ref();
    let details = params.and_then(|params| params.refund_details.as_ref());
    format!(
        "authenticate.is_some={} sourceId={:?} refundDetails={}",
        call.authenticate.is_some(),
        params.and_then(|params| params.source_id.as_deref()),
        match details {
            None => "None".to_owned(),
            Some(d) => format!(
                "Some{{paymentFormId: {:?}, account: {:?}}}",
                d.payment_form_id, d.account
            ),
        }
    )
}

// ------------------------------------------------------------------------------------------------
// The benchmark.

fn binding(c: &mut Criterion) {
    let limits = XmlLimits::default();
    let timed: Vec<(String, Vec<u8>)> = OPERATIONS.iter().map(|op| timed_input(op)).collect();
    let base = timed[0].1.clone();
    let deep: Vec<(String, Vec<u8>)> = DEPTHS
        .iter()
        .map(|&extra| (format!("depth+{extra}"), nested(&base, extra)))
        .collect();
    let all: Vec<(String, Vec<u8>)> = timed.iter().chain(&deep).cloned().collect();

    agreement(&limits, &all);
    observations(&limits);
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and only smoke-tests.
    if std::env::args().any(|arg| arg == "--bench") {
        interleaved(&limits, &all);
    }

    for (name, body) in &timed {
        let mut group = c.benchmark_group(format!("binding/{name}"));
        let body = body.as_slice();
        group.bench_function("crate", |b| b.iter(|| crate_way(black_box(body), &limits)));
        group.bench_function("serde", |b| b.iter(|| serde_way(black_box(body))));
        group.bench_function("yaserde", |b| b.iter(|| yaserde_way(black_box(body))));
        group.finish();
    }

    let mut group = c.benchmark_group("binding/depth");
    for ((_, body), extra) in deep.iter().zip(DEPTHS) {
        let body = body.as_slice();
        group.bench_with_input(BenchmarkId::new("crate", extra), body, |b, body| {
            b.iter(|| crate_way(black_box(body), &limits))
        });
        group.bench_with_input(BenchmarkId::new("serde", extra), body, |b, body| {
            b.iter(|| serde_way(black_box(body)))
        });
        group.bench_with_input(BenchmarkId::new("yaserde", extra), body, |b, body| {
            b.iter(|| yaserde_way(black_box(body)))
        });
    }
    group.finish();
}

/// A cross-check that survives a busy machine: the three ways take turns, in batches of about
/// 2 ms, for 25 rounds per input; a slow spell then hits all three alike, and the minimum batch
/// is close to the cost without interference. Prints ns per call (min and median of batches).
fn interleaved(limits: &XmlLimits, inputs: &[(String, Vec<u8>)]) {
    const ROUNDS: usize = 25;
    const BATCH: Duration = Duration::from_millis(2);
    println!("== Interleaved cross-check: ns per call, min / median of {ROUNDS} batches ==");
    println!(
        "{:<30} {:>17} {:>17} {:>17} {:>8} {:>8}",
        "input", "crate", "serde", "yaserde", "ya/crate", "ya/serde"
    );
    for (name, body) in inputs {
        let body = body.as_slice();
        let ways: [&dyn Fn() -> Outcome; 3] = [
            &|| crate_way(black_box(body), limits),
            &|| serde_way(black_box(body)),
            &|| yaserde_way(black_box(body)),
        ];
        let sizes = ways.map(|way| {
            let started = Instant::now();
            let _ = black_box(way());
            let once = started.elapsed().max(Duration::from_nanos(100));
            (BATCH.as_nanos() / once.as_nanos()).max(1) as u32
        });
        let mut samples = [const { Vec::new() }; 3];
        for _ in 0..ROUNDS {
            for (index, way) in ways.iter().enumerate() {
                let started = Instant::now();
                for _ in 0..sizes[index] {
                    let _ = black_box(way());
                }
                samples[index].push(started.elapsed().as_nanos() as f64 / f64::from(sizes[index]));
            }
        }
        let stats = samples.map(|mut batch| {
            batch.sort_by(f64::total_cmp);
            (batch[0], batch[batch.len() / 2])
        });
        let cell = |(min, median): (f64, f64)| format!("{min:>7.0} / {median:>7.0}");
        println!(
            "{:<30} {} {} {} {:>8.2} {:>8.2}",
            name,
            cell(stats[0]),
            cell(stats[1]),
            cell(stats[2]),
            stats[2].0 / stats[0].0,
            stats[2].0 / stats[1].0,
        );
    }
    println!();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        // Plotting (plotters: no gnuplot here) costs seconds per benchmark; the numbers, the
        // HTML-less estimates in target/criterion and the terminal output are what we read.
        .without_plots()
}

criterion_group! {
    name = benches;
    config = config();
    targets = binding
}
criterion_main!(benches);
