//! The JSON faces: the REST Admin API (`/api/admin/v{N}/refunds/{operation}`) and the legacy JSON
//! gate (`/api/?gate=refunds/{operation}/{version}/json`). Both bind parameters through
//! [`Params`] and call the same operations as SOAP; only the envelope and the statuses differ.

mod ledger_proof;
mod unique_keys;

use std::borrow::Cow;
use std::sync::LazyLock;

use chrono_tz::Tz;
use serde_json::{Map, Number, Value, json};

use crate::clock::format_local_datetime;
use crate::money::Money;
use crate::operations::{
    AddAutomaticRefundForOrderOp, AddAutomaticRefundOp, AddManualRefundOp, CallContext,
    CancelRefundOp, ConfirmRefundOp, GetPossibleAutoRefundsOp, GetRefundStatusOp, OPERATION_COUNT,
    OPERATION_NAMES, Operation, Params, RetrieveRefundsListOp, Scalar, UpdateRefundOp, call,
    legacy_credentials,
};
use crate::refunds::{
    Answer, Channel, Credentials, Origin, RefundError, RefundService, StoredResponse,
};

/// The OpenAPI 3 document of the REST face as served at `/api/doc/admin/v6/json`; the other
/// versions' documents differ only in their paths (see [`openapi`]).
pub const OPENAPI: &str = include_str!("openapi.json");

/// The Admin API versions served, all alike: every version a published IdoSell client targets
/// (the JS client defaults to v8, the Python client to v6).
pub const VERSIONS: std::ops::RangeInclusive<u32> = 1..=8;

/// The version named by a path segment `v{N}`, spelled canonically (`v6`, not `v06` or `v+6`),
/// if it is served.
pub fn version(segment: &str) -> Option<u32> {
    let digits = segment.strip_prefix('v')?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .parse()
        .ok()
        .filter(|version| VERSIONS.contains(version))
}

/// The OpenAPI document of `version` (one of [`VERSIONS`]): the bundled v6 document with its
/// paths under `/api/admin/v{version}/`. Built once, so serving it copies a static string.
pub fn openapi(version: u32) -> &'static str {
    static DOCUMENTS: LazyLock<Vec<String>> = LazyLock::new(|| {
        VERSIONS
            .map(|version| {
                OPENAPI.replace("\"/api/admin/v6/", &format!("\"/api/admin/v{version}/"))
            })
            .collect()
    });
    let index = version.saturating_sub(*VERSIONS.start()) as usize;
    DOCUMENTS.get(index).map_or(OPENAPI, String::as_str)
}

/// The 404 answer's text for a path under `/api/admin/` or `/api/doc/admin/` that is not served.
pub fn unknown_path_message() -> &'static str {
    static MESSAGE: LazyLock<String> = LazyLock::new(|| {
        let versions: Vec<String> = VERSIONS.map(|version| format!("v{version}")).collect();
        format!(
            "not found: the REST API is /api/admin/v{{N}}/refunds/{{operation}} (its OpenAPI \
             document at /api/doc/admin/v{{N}}/json); the versions served are {}",
            versions.join(", ")
        )
    });
    &MESSAGE
}

/// A JSON answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonReply {
    pub status: u16,
    pub body: String,
    /// For 405: the method the operation takes.
    pub allow: Option<&'static str>,
    pub operation: Option<&'static str>,
    /// The stored answer to an earlier request with the same idempotency key.
    pub replayed: bool,
    /// A business error in a 200 answer (the JSON gate).
    pub business_error: bool,
    /// For an answer with a non-zero faultCode: its faultString made header-safe, sent as
    /// `X-Error` (the published JS client builds its exception message from that header).
    pub x_error: Option<String>,
}

impl JsonReply {
    fn new(status: u16, body: &Value) -> JsonReply {
        JsonReply {
            status,
            body: body.to_string(),
            allow: None,
            operation: None,
            replayed: false,
            business_error: false,
            x_error: None,
        }
    }

    fn stored(&self) -> StoredResponse {
        StoredResponse {
            status: self.status,
            content_type: "application/json".to_owned(),
            body: self.body.clone().into_bytes(),
        }
    }

    /// A stored answer sent again; its `X-Error` is read back from its `errors`.
    fn replayed(stored: StoredResponse) -> JsonReply {
        let body = String::from_utf8_lossy(&stored.body).into_owned();
        let x_error = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|answer| {
                let errors = answer.get("errors")?;
                let code = errors.get("faultCode")?.as_i64()?;
                let message = errors.get("faultString")?.as_str()?;
                (code != 0).then(|| header_safe(message))
            });
        JsonReply {
            status: stored.status,
            body,
            allow: None,
            operation: None,
            replayed: true,
            business_error: false,
            x_error,
        }
    }

    /// An error answer: `{"errors": {"faultCode", "faultString"}}`.
    pub fn error(status: u16, fault_code: i32, message: &str) -> JsonReply {
        JsonReply {
            x_error: Some(header_safe(message)),
            ..JsonReply::new(status, &errors(fault_code, message))
        }
    }
}

/// The longest `X-Error` value sent, in bytes; longer messages are cut (the body has them whole).
const MAX_X_ERROR: usize = 256;

/// `message` as a header value: printable ASCII only (control characters, CR and LF become
/// spaces, an ellipsis three dots, anything else non-ASCII `?`), at most [`MAX_X_ERROR`] bytes.
pub fn header_safe(message: &str) -> String {
    let mut text = String::with_capacity(message.len().min(MAX_X_ERROR));
    for c in message.chars() {
        match c {
            ' '..='~' => text.push(c),
            '…' => text.push_str("..."),
            c if c.is_control() => text.push(' '),
            _ => text.push('?'),
        }
        if text.len() > MAX_X_ERROR {
            text.truncate(MAX_X_ERROR - 3);
            text.push_str("...");
            break;
        }
    }
    text.trim().to_owned()
}

fn errors(fault_code: i32, message: &str) -> Value {
    json!({ "errors": { "faultCode": fault_code, "faultString": message } })
}

/// An operation as the JSON faces answer it.
pub trait JsonOperation: Operation {
    /// The REST verb.
    const METHOD: &'static str;
    /// `result` for one answer, `results` for a list.
    const RESULT_KEY: &'static str;
    /// `result` or `results` (and paging), as a JSON object's fields.
    fn result_json(response: &Self::Response, timezone: Tz) -> Map<String, Value>;
}

/// Each operation's REST verb and path segment; the OpenAPI document must list exactly these.
/// The operations of the registry, in its order, then this service's own `ledgerProof`.
pub const ROUTES: [(&str, &str); OPERATION_COUNT + 1] = {
    let operations = crate::operations!(map Op => (Op::NAME, <Op as JsonOperation>::METHOD));
    let mut routes = [(ledger_proof::NAME, "GET"); OPERATION_COUNT + 1];
    let mut index = 0;
    while index < OPERATION_COUNT {
        routes[index] = operations[index];
        index += 1;
    }
    routes
};

/// A REST call as the server hands it over.
pub struct RestCall<'a> {
    pub method: &'a str,
    pub operation: &'a str,
    pub query: &'a str,
    pub api_key: Option<String>,
    pub idempotency_key: Option<String>,
    pub request_id: Option<String>,
    pub body: &'a [u8],
}

/// Runs one REST call: 200 with the result, 207 with `errors` for a business error, 401/403 for
/// credentials and scopes, 409 for a reused idempotency key, 422 for unreadable or invalid
/// parameters, 404/405 for the route.
pub async fn handle_rest(service: &RefundService, call: RestCall<'_>) -> JsonReply {
    if call.operation == ledger_proof::NAME {
        return ledger_proof::handle(service, &call).await;
    }
    crate::operations!(
        dispatch call.operation,
        rest(service, &call),
        unknown => not_found(call.operation)
    )
}

fn not_found(operation: &str) -> JsonReply {
    let name: String = operation.chars().take(64).collect();
    let message = format!(
        "unknown operation '{name}'; this API offers: {}",
        OPERATION_NAMES.join(", ")
    );
    JsonReply::error(404, 2, &message)
}

async fn rest<Op: JsonOperation>(service: &RefundService, request: &RestCall<'_>) -> JsonReply {
    if request.method != Op::METHOD {
        let message = format!("{} takes {}", Op::NAME, Op::METHOD);
        return JsonReply {
            allow: Some(Op::METHOD),
            ..JsonReply::error(405, 2, &message)
        };
    }
    let credentials = request.api_key.clone().map(Credentials::ApiKey);
    let timezone = service.timezone();
    let context = CallContext {
        dialect: "",
        origin: Origin {
            channel: Channel::Rest,
            request_id: request.request_id.clone(),
        },
        idempotency_key: request.idempotency_key.clone(),
        render: Box::new(move |outcome| rest_reply::<Op>(outcome, timezone).stored()),
    };
    let answer = if Op::METHOD == "GET" {
        let query = QueryParams::parse(request.query);
        call::<Op, _>(service, credentials, Ok(&query), context).await
    } else {
        match body_params(request.body) {
            Ok(params) => call::<Op, _>(service, credentials, Ok(&params), context).await,
            Err(error) => {
                call::<Op, Map<String, Value>>(service, credentials, Err(error), context).await
            }
        }
    };
    let mut reply = match answer {
        Answer::Fresh(outcome) => rest_reply::<Op>(&outcome, timezone),
        Answer::Replayed(stored) => JsonReply::replayed(stored),
    };
    reply.operation = Some(Op::NAME);
    reply
}

fn rest_reply<Op: JsonOperation>(
    outcome: &Result<Op::Response, RefundError>,
    timezone: Tz,
) -> JsonReply {
    match outcome {
        Ok(response) => {
            let mut body = Op::result_json(response, timezone);
            with_fault_fields(&mut body);
            JsonReply::new(200, &Value::Object(body))
        }
        Err(error) => {
            let status = rest_status(error);
            let (code, message) = (error.fault_code(Op::KIND), error.public_message());
            let mut reply = JsonReply::error(status, code, &message);
            if status == 207 {
                reply.body = business_error_body(Op::RESULT_KEY, code, &message).to_string();
            }
            reply
        }
    }
}

/// The HTTP status of an error on the REST face: 207 for a business error.
fn rest_status(error: &RefundError) -> u16 {
    match error {
        RefundError::Unauthenticated => 401,
        RefundError::AuthenticationThrottled(_) => 429,
        RefundError::Forbidden(_) => 403,
        RefundError::InvalidParameters(_) => 422,
        RefundError::IdempotencyKeyReused => 409,
        RefundError::Internal(_) if error.is_unavailable() => 503,
        RefundError::Internal(_) => 500,
        _ => 207,
    }
}

/// IdoSell's result objects carry their own `faultCode` and `faultString`: 0 and "" on success.
fn with_fault_fields(body: &mut Map<String, Value>) {
    let add = |object: &mut Value| {
        if let Value::Object(fields) = object {
            fields.insert("faultCode".to_owned(), json!(0));
            fields.insert("faultString".to_owned(), json!(""));
        }
    };
    if let Some(result) = body.get_mut("result") {
        add(result);
    }
    if let Some(Value::Array(results)) = body.get_mut("results") {
        results.iter_mut().for_each(add);
    }
}

/// A 207 as IdoSell's schema shows it: the operation's `result` (or one `results` entry)
/// carrying the fault, plus the top-level `errors`.
fn business_error_body(result_key: &str, code: i32, message: &str) -> Value {
    let fault = json!({ "faultCode": code, "faultString": message });
    let mut body = errors(code, message);
    body[result_key] = if result_key == "results" {
        json!([fault])
    } else {
        fault
    };
    body
}

/// A legacy JSON gate call.
pub struct GateCall<'a> {
    pub operation: &'a str,
    pub api_key: Option<String>,
    pub idempotency_key: Option<String>,
    pub request_id: Option<String>,
    pub body: &'a [u8],
}

/// Runs one JSON gate call: `{"authenticate": {…}, "params": {…}}` in, `errors` plus
/// `result`/`results` out, HTTP 200 for every business outcome (as the SOAP gate), 422 for a
/// body that is not a JSON object, 404 for an unknown operation.
pub async fn handle_gate(service: &RefundService, call: GateCall<'_>) -> JsonReply {
    crate::operations!(
        dispatch call.operation,
        gate(service, &call),
        unknown => not_found(call.operation)
    )
}

async fn gate<Op: JsonOperation>(service: &RefundService, request: &GateCall<'_>) -> JsonReply {
    let mut document = match json_object(request.body) {
        Ok(document) => document,
        Err(error) => {
            return JsonReply::error(422, error.fault_code(Op::KIND), &error.public_message());
        }
    };
    let credentials = match &request.api_key {
        Some(key) => Some(Credentials::ApiKey(key.clone())),
        None => legacy_credentials(&document).map(Credentials::Legacy),
    };
    let params = match document.remove("params") {
        Some(Value::Object(params)) => operation_fields(params),
        _ => Err(RefundError::InvalidParameters(
            "params must be a JSON object".to_owned(),
        )),
    };
    let timezone = service.timezone();
    let context = CallContext {
        dialect: "",
        origin: Origin {
            channel: Channel::JsonGate,
            request_id: request.request_id.clone(),
        },
        idempotency_key: request.idempotency_key.clone(),
        render: Box::new(move |outcome| gate_reply::<Op>(outcome, timezone).stored()),
    };
    let answer = match params {
        Ok(params) => call::<Op, _>(service, credentials, Ok(&params), context).await,
        Err(error) => {
            call::<Op, Map<String, Value>>(service, credentials, Err(error), context).await
        }
    };
    let mut reply = match answer {
        Answer::Fresh(outcome) => gate_reply::<Op>(&outcome, timezone),
        Answer::Replayed(stored) => JsonReply::replayed(stored),
    };
    reply.operation = Some(Op::NAME);
    reply
}

fn gate_reply<Op: JsonOperation>(
    outcome: &Result<Op::Response, RefundError>,
    timezone: Tz,
) -> JsonReply {
    let mut body = Map::new();
    match outcome {
        Ok(response) => {
            body.insert(
                "errors".to_owned(),
                json!({ "faultCode": 0, "faultString": "" }),
            );
            body.extend(Op::result_json(response, timezone));
        }
        Err(error) => {
            let code = error.fault_code(Op::KIND);
            body.insert(
                "errors".to_owned(),
                json!({ "faultCode": code, "faultString": error.public_message() }),
            );
        }
    }
    JsonReply {
        business_error: outcome.is_err(),
        x_error: outcome
            .as_ref()
            .err()
            .map(|error| header_safe(&error.public_message())),
        ..JsonReply::new(200, &Value::Object(body))
    }
}

fn json_object(body: &[u8]) -> Result<Map<String, Value>, RefundError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => {
            unique_keys::check(body).map_err(|error| {
                RefundError::InvalidParameters(format!("the body is ambiguous: {error}"))
            })?;
            Ok(object)
        }
        Ok(_) => Err(RefundError::InvalidParameters(
            "the body must be a JSON object".to_owned(),
        )),
        Err(error) => Err(RefundError::InvalidParameters(format!(
            "the body is not valid JSON: {error}"
        ))),
    }
}

/// `{"params": {…}}` of a POST or PUT body.
fn body_params(body: &[u8]) -> Result<Map<String, Value>, RefundError> {
    match json_object(body)?.remove("params") {
        Some(Value::Object(params)) => operation_fields(params),
        _ => Err(RefundError::InvalidParameters(
            "the body must be {\"params\": {…}}".to_owned(),
        )),
    }
}

/// The operation's fields from a `params` object. The published Python client wraps them
/// twice, `{"params": {"params": {…}}}`; no operation has a field named `params`, so a `params`
/// object whose only member is an object named `params` is read as that inner object. Nothing
/// wider: a `params` member beside other fields, or nested a third time, is refused.
fn operation_fields(mut params: Map<String, Value>) -> Result<Map<String, Value>, RefundError> {
    if params.len() == 1
        && let Some(Value::Object(inner)) = params.get_mut("params")
    {
        params = std::mem::take(inner);
    }
    if params.contains_key("params") {
        return Err(RefundError::InvalidParameters(
            "params.params is not a field of any operation: send the fields in params \
             (a params object holding only an object named params is read as that object)"
                .to_owned(),
        ));
    }
    Ok(params)
}

impl Params for Map<String, Value> {
    fn scalar(&self, name: &str) -> Result<Option<Scalar<'_>>, &'static str> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(Scalar::Text(Cow::Borrowed(text)))),
            // With serde_json's arbitrary precision, a number keeps all its digits (never an f64).
            Some(Value::Number(number)) => Ok(Some(Scalar::Number(number.to_string()))),
            Some(Value::Bool(flag)) => Ok(Some(Scalar::Bool(*flag))),
            Some(Value::Array(_)) => Err("an array"),
            Some(Value::Object(_)) => Err("an object"),
        }
    }

    fn nested(&self, name: &str) -> Result<Option<&Map<String, Value>>, &'static str> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(object)) => Ok(Some(object)),
            Some(Value::Array(_)) => Err("an array"),
            Some(_) => Err("a single value"),
        }
    }
}

/// GET parameters: `name=value` pairs, percent-decoded; the first of a repeated name counts.
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    pub fn parse(query: &str) -> QueryParams {
        QueryParams {
            pairs: form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        }
    }
}

impl Params for QueryParams {
    fn scalar(&self, name: &str) -> Result<Option<Scalar<'_>>, &'static str> {
        let value = self.pairs.iter().find(|(key, _)| key == name);
        Ok(value.map(|(_, value)| Scalar::Text(Cow::Borrowed(value.as_str()))))
    }

    fn nested(&self, _name: &str) -> Result<Option<&QueryParams>, &'static str> {
        Ok(None)
    }
}

/// An amount as a JSON number written exactly (`10.50`, never a binary float).
pub fn exact_money(amount: &Money) -> Value {
    let text = amount.to_decimal().to_string();
    serde_json::from_str::<Number>(&text)
        .map(Value::Number)
        .unwrap_or(Value::String(text))
}

fn result(fields: Value) -> Map<String, Value> {
    let mut object = Map::new();
    object.insert("result".to_owned(), fields);
    object
}

impl JsonOperation for AddAutomaticRefundOp {
    const METHOD: &'static str = "POST";
    const RESULT_KEY: &'static str = "result";
    fn result_json(id: &i64, _: Tz) -> Map<String, Value> {
        result(json!({ "refundId": id }))
    }
}

impl JsonOperation for AddAutomaticRefundForOrderOp {
    const METHOD: &'static str = "POST";
    const RESULT_KEY: &'static str = "result";
    fn result_json(id: &i64, _: Tz) -> Map<String, Value> {
        result(json!({ "refundId": id }))
    }
}

impl JsonOperation for AddManualRefundOp {
    const METHOD: &'static str = "POST";
    const RESULT_KEY: &'static str = "result";
    fn result_json(id: &i64, _: Tz) -> Map<String, Value> {
        result(json!({ "refundId": id }))
    }
}

impl JsonOperation for GetPossibleAutoRefundsOp {
    const METHOD: &'static str = "GET";
    const RESULT_KEY: &'static str = "results";
    fn result_json(response: &Self::Response, _: Tz) -> Map<String, Value> {
        let results: Vec<Value> = response
            .iter()
            .map(|possible| {
                json!({
                    "paymentId": possible.payment_id,
                    "value": exact_money(&possible.value),
                    "refundType": if possible.full { "full" } else { "partial" },
                    "refundCurrency": possible.value.currency.code(),
                })
            })
            .collect();
        let mut object = Map::new();
        object.insert("results".to_owned(), Value::Array(results));
        object
    }
}

impl JsonOperation for GetRefundStatusOp {
    const METHOD: &'static str = "GET";
    const RESULT_KEY: &'static str = "result";
    fn result_json(status: &Self::Response, timezone: Tz) -> Map<String, Value> {
        result(json!({
            "refundDateAdd": format_local_datetime(status.date_add, timezone),
            "refundValue": exact_money(&status.value),
            "refundStatus": status.status.as_str(),
            "refundDateConfirm": status.date_confirm.map(|at| format_local_datetime(at, timezone)).unwrap_or_default(),
            "refundExternalId": status.external_id.clone().unwrap_or_default(),
            "refundCurrency": status.value.currency.code(),
        }))
    }
}

impl JsonOperation for UpdateRefundOp {
    const METHOD: &'static str = "PUT";
    const RESULT_KEY: &'static str = "result";
    fn result_json(done: &bool, _: Tz) -> Map<String, Value> {
        result(json!({ "updateResult": done }))
    }
}

impl JsonOperation for ConfirmRefundOp {
    const METHOD: &'static str = "PUT";
    const RESULT_KEY: &'static str = "result";
    fn result_json(done: &bool, _: Tz) -> Map<String, Value> {
        result(json!({ "confirmResult": done }))
    }
}

impl JsonOperation for CancelRefundOp {
    const METHOD: &'static str = "PUT";
    const RESULT_KEY: &'static str = "result";
    fn result_json(done: &bool, _: Tz) -> Map<String, Value> {
        result(json!({ "resultStatus": done }))
    }
}

impl JsonOperation for RetrieveRefundsListOp {
    const METHOD: &'static str = "GET";
    const RESULT_KEY: &'static str = "results";
    fn result_json(page: &Self::Response, _: Tz) -> Map<String, Value> {
        let results: Vec<Value> = page
            .refunds
            .iter()
            .map(|refund| {
                json!({
                    "sourceType": refund.source.source_type.as_str(),
                    "sourceId": refund.source.id,
                    // A string, as in IdoSell's schema (and its update/cancel requests).
                    "paymentId": refund.id.to_string(),
                    "refundValue": exact_money(&refund.amount),
                    "refundCurrency": refund.amount.currency.code(),
                })
            })
            .collect();
        let mut object = Map::new();
        object.insert("results".to_owned(), Value::Array(results));
        object.insert("resultsNumberAll".to_owned(), json!(page.total));
        object.insert(
            "resultsNumberPage".to_owned(),
            json!(page.total.div_ceil(u64::from(page.limit))),
        );
        object.insert("resultsPage".to_owned(), json!(page.page));
        object.insert("resultsLimit".to_owned(), json!(page.limit));
        object
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_X_ERROR, header_safe, version};

    #[test]
    fn x_error_is_printable_ascii_and_bounded() {
        assert_eq!(
            header_safe("invalid source type 'żółw\r\nX: y…'"),
            "invalid source type '???w  X: y...'"
        );
        let long = "é".repeat(1000);
        let cut = header_safe(&long);
        assert_eq!(cut.len(), MAX_X_ERROR);
        assert!(cut.ends_with("..."));
        let exact = "a".repeat(MAX_X_ERROR);
        assert_eq!(
            header_safe(&exact),
            exact,
            "a message of the cap is sent whole"
        );
    }

    #[test]
    fn only_canonical_served_versions_count() {
        assert_eq!(version("v1"), Some(1));
        assert_eq!(version("v8"), Some(8));
        for refused in ["v0", "v9", "v06", "v+6", "v", "6", "V6", "v6 ", "v10"] {
            assert_eq!(version(refused), None, "{refused}");
        }
    }
}
