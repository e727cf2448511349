//! Recorded REST conformance, the JSON twin of `soap_fixtures`: every
//! `fixtures/rest/{operation}/{case}.request.json` is sent to a fresh server over a copy of the
//! same fixture database the SOAP runner builds, and the answer must equal the golden
//! `{case}.response.json` (status, Content-Type, the `Allow` header when there is one, and the
//! whole body compared as JSON values; with `arbitrary_precision`, `10.50` and `10.5` differ).
//!
//! A request document:
//!
//! ```json
//! {"method": "PUT",
//!  "path": "/api/admin/v6/refunds/cancelRefund",   // optional; this default for twins
//!  "query": {"name": "value"},                      // optional; appended to the path
//!  "headers": {"X-API-KEY": "…"},                   // optional; replaces the defaults
//!  "body": {"params": {…}},                         // optional; any JSON value
//!  "rawBody": "…",                                  // optional; sent verbatim instead of body
//!  "rawBodyEncoding": "latin1" | "utf-16le",        // optional; how rawBody is encoded (UTF-8)
//!  "stretch": {"pointer": "/params/x", "times": N}} // optional; repeats that string of body N
//!                                                   // times (big bodies without big files)
//! ```
//!
//! The default headers are `X-API-KEY` with the all-scopes test key, plus
//! `Content-Type: application/json` when there is a body. Bodies over 64 KiB are sent a moment
//! after their headers, so that an answer given on the Content-Length alone (413) is read
//! before the body is written. A golden document is
//! `{"status", "contentType", "headers": {"allow"?, "x-error"?}?, "body"}`. Every answer must
//! also be JSON, below HTTP 500, carry `errors{faultCode, faultString}` with a code fitting its
//! status when it is not a 200 (a 207 also its `result`/`results` carrying the fault), carry a
//! header-safe `X-Error` exactly when its faultCode is not 0, and leak nothing internal (HTML,
//! panics, SQLite).
//!
//! Every folder but `_rest` mirrors `fixtures/soap`: each SOAP case has a REST twin of the same
//! name, and `rest_and_soap_give_the_same_domain_outcome` holds the two goldens of a pair to the
//! same outcome. `_rest` holds what only the REST face has (verbs, versions, keys and scopes,
//! JSON types), and cases of the legacy JSON gate (a `path` of `/api/?gate=…/json`, answered
//! 200 with `errors` for every outcome). `UPDATE_FIXTURES=1 cargo test` rewrites the goldens; review the diff.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use futures_util::StreamExt as _;
use serde_json::{Map, Value, json};

use crate::canonical::{self, Node};
use crate::soap_fixtures::{self, fixture_database};
use refunds_gateway::Config;

use crate::support::{
    TEST_API_KEY, TestDatabase, TestServer, check_golden, client, fixtures_dir, test_config,
};

/// The folder of REST-only cases (no SOAP twin).
const REST_ONLY: &str = "_rest";

/// Cases run at once, each on its own server and database copy.
const PARALLEL_CASES: usize = 4;

/// Twin pairs whose outcomes may differ, with why. None so far: every SOAP envelope fault has a
/// REST request-level error of the same spirit (see the twins' notes below), and every domain
/// case maps field by field. An entry here must name an existing pair.
///
/// How the SOAP-only shapes were mapped (for reviewers of the twins):
/// - envelope faults → 4xx: `two-elements-in-body` → two JSON documents in one body (422);
///   `nesting-200-deep` → JSON nested 200 deep (422, serde_json's recursion limit);
///   `text-value-70kb` → the REST limit is the 1 MiB body cap, so a 2 MiB value (413);
///   `undeclared-entity` → an invalid string escape (422); `encoding-iso-8859-1` → a Latin-1
///   body (422, JSON is UTF-8); `external-entity` → a bare identifier as value (422);
///   `doctype-internal-entity` → a comment before the document (422); `truncated-xml` and
///   `soap12-truncated` → a truncated body / query (422); `empty-body` → GET without a query
///   (422); `non-xml-body` → a query that is not `name=value` (422); `utf16-body` → the query
///   in UTF-16 (422); `header-after-body` → the GET parameters sent as a body (422);
///   `trailing-text-after-envelope` → text after the paymentId (422); `envelope-wrong-namespace`
///   → a path outside `/refunds/` (404); `unknown-operation` → an unknown operation path
///   (404); `soap12-must-understand` and `must-understand-header` → an API version the server
///   does not implement, v9 and v0 (404).
/// - shapes that succeed → REST variants that succeed: other versions (v1…v5), amounts and
///   ids as strings, `\u` escapes, whitespace around a paymentId, no or other Content-Type,
///   an extra `authenticate` member, JSON nulls for nil.
/// - legacy credentials → API keys: missing → no key or an empty `X-API-KEY` (401); wrong key,
///   unknown user, two-days-old key → unknown keys (401); accepted variants (yesterday's key,
///   aliases, uppercase hex) → `Authorization: Bearer` in three spellings of the scheme.
const PARITY_EXCEPTIONS: &[(&str, &str, &str)] = &[];

pub struct RestCase {
    folder: String,
    name: String,
    request: PathBuf,
}

impl RestCase {
    fn golden(&self) -> PathBuf {
        self.request
            .with_file_name(format!("{}.response.json", self.name))
    }

    fn label(&self) -> String {
        format!("{}/{}", self.folder, self.name)
    }
}

fn rest_dir() -> PathBuf {
    fixtures_dir().join("rest")
}

fn files_ending(folder: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter_map(|file| file.strip_suffix(suffix).map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// Every REST case, `_rest` included, sorted by folder and name.
pub fn rest_cases() -> Vec<RestCase> {
    let mut folders: Vec<String> = std::fs::read_dir(rest_dir())
        .expect("fixtures/rest")
        .map(|entry| entry.expect("entry"))
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    let mut cases = Vec::new();
    for folder in folders {
        let dir = rest_dir().join(&folder);
        for name in files_ending(&dir, ".request.json") {
            let request = dir.join(format!("{name}.request.json"));
            cases.push(RestCase {
                folder: folder.clone(),
                name,
                request,
            });
        }
    }
    cases
}

/// A request document, ready to send.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

const REQUEST_FIELDS: [&str; 8] = [
    "method",
    "path",
    "query",
    "headers",
    "body",
    "rawBody",
    "rawBodyEncoding",
    "stretch",
];

fn request_of(case: &RestCase) -> Result<Request, String> {
    let text = std::fs::read_to_string(&case.request).map_err(|e| e.to_string())?;
    let document: Map<String, Value> =
        serde_json::from_str(&text).map_err(|e| format!("request document: {e}"))?;
    if let Some(unknown) = document
        .keys()
        .find(|key| !REQUEST_FIELDS.contains(&key.as_str()))
    {
        return Err(format!("request document: unknown field `{unknown}`"));
    }
    let method = document
        .get("method")
        .and_then(Value::as_str)
        .ok_or("request document: no `method`")?
        .to_owned();
    let mut path = match document.get("path") {
        Some(Value::String(path)) => path.clone(),
        Some(_) => return Err("request document: `path` must be a string".to_owned()),
        None if case.folder == REST_ONLY => {
            return Err("request document: `_rest` cases need a `path`".to_owned());
        }
        None => format!("/api/admin/v6/refunds/{}", case.folder),
    };
    if let Some(query) = document.get("query") {
        let query = query
            .as_object()
            .ok_or("request document: `query` must be an object")?;
        let mut serializer = form_urlencoded::Serializer::new(String::new());
        for (name, value) in query {
            serializer.append_pair(name, &scalar_text(value));
        }
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str(&serializer.finish());
    }
    let body = match (document.get("body"), document.get("rawBody")) {
        (Some(_), Some(_)) => {
            return Err("request document: `body` and `rawBody` are exclusive".to_owned());
        }
        (Some(body), None) => {
            let mut body = body.clone();
            if let Some(stretch) = document.get("stretch") {
                stretch_string(&mut body, stretch)?;
            }
            Some(serde_json::to_vec(&body).expect("serialize body"))
        }
        (None, Some(Value::String(raw))) => {
            let encoding = document
                .get("rawBodyEncoding")
                .and_then(Value::as_str)
                .unwrap_or("utf-8");
            Some(encode(raw, encoding)?)
        }
        (None, Some(_)) => return Err("request document: `rawBody` must be a string".to_owned()),
        (None, None) => None,
    };
    let headers = match document.get("headers") {
        Some(Value::Object(headers)) => headers
            .iter()
            .map(|(name, value)| {
                Ok((
                    name.clone(),
                    value
                        .as_str()
                        .ok_or("header values are strings")?
                        .to_owned(),
                ))
            })
            .collect::<Result<Vec<_>, String>>()?,
        Some(_) => return Err("request document: `headers` must be an object".to_owned()),
        None => {
            let mut headers = vec![("X-API-KEY".to_owned(), TEST_API_KEY.to_owned())];
            if body.is_some() {
                headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
            }
            headers
        }
    };
    Ok(Request {
        method,
        path,
        headers,
        body,
    })
}

/// `{"pointer": "/params/x", "times": N}`: the string at `pointer` repeated `N` times.
fn stretch_string(body: &mut Value, stretch: &Value) -> Result<(), String> {
    let pointer = stretch
        .get("pointer")
        .and_then(Value::as_str)
        .ok_or("stretch: no `pointer`")?;
    let times = stretch
        .get("times")
        .and_then(Value::as_u64)
        .ok_or("stretch: no `times`")?;
    match body.pointer_mut(pointer) {
        Some(Value::String(text)) => {
            *text = text.repeat(usize::try_from(times).map_err(|e| e.to_string())?);
            Ok(())
        }
        _ => Err(format!("stretch: `{pointer}` is not a string of the body")),
    }
}

fn encode(text: &str, encoding: &str) -> Result<Vec<u8>, String> {
    match encoding {
        "utf-8" => Ok(text.as_bytes().to_vec()),
        "latin1" => text
            .chars()
            .map(|c| {
                u8::try_from(u32::from(c)).map_err(|_| format!("rawBody: {c:?} is not Latin-1"))
            })
            .collect(),
        "utf-16le" => Ok(text.encode_utf16().flat_map(u16::to_le_bytes).collect()),
        other => Err(format!("rawBodyEncoding: unknown `{other}`")),
    }
}

/// A JSON scalar as text: strings as they are, numbers by their exact text.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "<null>".to_owned(),
        other => other.to_string(),
    }
}

/// What a REST case answered, as recorded in a golden.
pub struct Reply {
    status: u16,
    content_type: String,
    allow: Option<String>,
    /// `X-Error`: the faultString of an answer with a non-zero faultCode, header-safe.
    x_error: Option<String>,
    text: String,
    /// Whether the case went to the legacy JSON gate (200 with `errors` for every outcome).
    gate: bool,
}

impl Reply {
    fn body(&self) -> Value {
        serde_json::from_str::<Value>(&self.text)
            .unwrap_or_else(|_| Value::String(self.text.clone()))
    }

    /// The recorded headers, `{"allow", "x-error"}` as present; `None` without either.
    fn headers(&self) -> Option<Value> {
        let mut headers = Map::new();
        if let Some(allow) = &self.allow {
            headers.insert("allow".to_owned(), json!(allow));
        }
        if let Some(x_error) = &self.x_error {
            headers.insert("x-error".to_owned(), json!(x_error));
        }
        (!headers.is_empty()).then_some(Value::Object(headers))
    }

    /// The golden document as a value (what `compare` holds the golden file to).
    fn golden(&self) -> Value {
        let mut golden =
            json!({ "status": self.status, "contentType": self.content_type, "body": self.body() });
        if let Some(headers) = self.headers() {
            golden["headers"] = headers;
        }
        golden
    }

    /// The golden file: the same document with status, Content-Type and headers first.
    fn golden_text(&self) -> String {
        let mut text = format!(
            "{{\n  \"status\": {},\n  \"contentType\": {},\n",
            self.status,
            json!(self.content_type)
        );
        if let Some(headers) = self.headers() {
            text.push_str(&format!("  \"headers\": {headers},\n"));
        }
        let body = serde_json::to_string_pretty(&self.body()).expect("golden JSON");
        text.push_str(&format!("  \"body\": {}\n}}\n", body.replace('\n', "\n  ")));
        text
    }
}

async fn send(http: &reqwest::Client, base: &str, request: Request) -> Result<Reply, String> {
    let gate = request.path.starts_with("/api/?gate=");
    let method = reqwest::Method::from_bytes(request.method.as_bytes())
        .map_err(|e| format!("method: {e}"))?;
    let mut builder = http.request(method, format!("{base}{}", request.path));
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    if let Some(body) = request.body {
        // Sent whole, even when over the cap: the server drains a refused body it was told the
        // length of, so a client that writes before it reads still gets its 413.
        builder = builder.body(body);
    }
    let response = builder
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (content_type, allow, x_error) = (
        header("content-type").unwrap_or_default(),
        header("allow"),
        header("x-error"),
    );
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .map_err(|e| format!("response body: {e}"))?;
    Ok(Reply {
        status,
        content_type,
        allow,
        x_error,
        text,
        gate,
    })
}

/// Words that betray internal text: HTML error pages, panics, the storage engine.
const LEAKS: [&str; 7] = [
    "<html",
    "<!doctype",
    "<body",
    "panicked",
    "rusqlite",
    "sqlite",
    "backtrace",
];

/// What every REST answer must be, whatever the golden says: JSON, no leaked internals, no
/// 5xx, `errors{faultCode, faultString}` on every error with a code that fits the status.
fn check_invariants(reply: &Reply) -> Result<(), String> {
    let lower = reply.text.to_lowercase();
    if let Some(word) = LEAKS.iter().find(|word| lower.contains(*word)) {
        return Err(format!(
            "the body leaks internal text ({word:?}): {}",
            shorten(&reply.text)
        ));
    }
    if reply.status >= 500 {
        return Err(format!(
            "HTTP {} for a client request: {}",
            reply.status,
            shorten(&reply.text)
        ));
    }
    if reply.content_type != "application/json" {
        return Err(format!(
            "Content-Type {:?}, expected application/json",
            reply.content_type
        ));
    }
    let body: Value =
        serde_json::from_str(&reply.text).map_err(|e| format!("the body is not JSON ({e})"))?;
    let code = body.pointer("/errors/faultCode").and_then(Value::as_i64);
    check_x_error(reply, &body)?;
    if reply.gate && reply.status == 200 {
        if code.is_none() {
            return Err(format!("a JSON gate answer without errors: {body}"));
        }
        return Ok(());
    }
    if reply.status == 200 {
        if body.get("errors").is_some()
            || !(body.get("result").is_some() || body.get("results").is_some())
        {
            return Err(format!("a 200 must carry result(s) and no errors: {body}"));
        }
        return Ok(());
    }
    if code.is_none()
        || !body
            .pointer("/errors/faultString")
            .is_some_and(Value::is_string)
    {
        return Err(format!(
            "HTTP {} without errors{{faultCode, faultString}}: {body}",
            reply.status
        ));
    }
    let code = code.unwrap_or_default();
    let fits = match reply.status {
        207 => code >= 3,
        401 | 403 => code == 1,
        404 | 405 | 413 | 422 => code == 2,
        _ => false,
    };
    if !fits {
        return Err(format!("HTTP {} with faultCode {code}", reply.status));
    }
    if reply.status == 207 {
        // IdoSell's 207: the operation's result key carrying the fault, beside `errors`.
        let fault = json!({"faultCode": code, "faultString": body["errors"]["faultString"]});
        let carried =
            body.get("result") == Some(&fault) || body.get("results") == Some(&json!([fault]));
        if !carried {
            return Err(format!(
                "a 207 without result(s) carrying its fault: {body}"
            ));
        }
    }
    if reply.status == 405 && reply.allow.is_none() {
        return Err("a 405 without an Allow header".to_owned());
    }
    Ok(())
}

/// `X-Error` is on every answer with a non-zero faultCode and on no other, header-safe
/// (printable ASCII, at most 256 bytes) and, when the faultString is, equal to it.
fn check_x_error(reply: &Reply, body: &Value) -> Result<(), String> {
    let code = body.pointer("/errors/faultCode").and_then(Value::as_i64);
    let fault_string = body
        .pointer("/errors/faultString")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match (&reply.x_error, code) {
        (None, Some(code)) if code != 0 => Err(format!("faultCode {code} without X-Error")),
        (Some(header), None | Some(0)) => Err(format!("X-Error {header:?} without a fault")),
        (Some(header), _)
            if header.len() > 256 || !header.bytes().all(|b| (b' '..=b'~').contains(&b)) =>
        {
            Err(format!("X-Error is not header-safe: {header:?}"))
        }
        (Some(header), _)
            if fault_string.len() <= 256
                && fault_string.bytes().all(|b| (b' '..=b'~').contains(&b))
                && header != fault_string.trim() =>
        {
            Err(format!(
                "X-Error {header:?} is not the faultString {fault_string:?}"
            ))
        }
        _ => Ok(()),
    }
}

fn shorten(text: &str) -> String {
    text.chars().take(300).collect()
}

/// Runs one case on its own server over a copy of `template`.
async fn run_case(
    template: &TestDatabase,
    http: &reqwest::Client,
    case: &RestCase,
) -> Result<Reply, String> {
    let database = template.copy();
    run_case_on(test_config(&database.path), http, case).await
}

/// Runs one case on its own server started with `config`.
pub async fn run_case_on(
    config: Config,
    http: &reqwest::Client,
    case: &RestCase,
) -> Result<Reply, String> {
    let request = request_of(case)?;
    let server = TestServer::start_with(config).await;
    let reply = send(http, &server.base, request).await;
    server.stop().await;
    reply
}

/// What is wrong with `reply` to `case`, judged against its golden file (never rewritten).
pub fn failures_of(case: &RestCase, reply: Result<Reply, String>) -> Vec<String> {
    let label = case.label();
    let reply = match reply {
        Ok(reply) => reply,
        Err(error) => return vec![format!("{label}: {error}")],
    };
    let mut failures = Vec::new();
    if let Err(broken) = check_invariants(&reply) {
        failures.push(format!("{label}: {broken}"));
    }
    match std::fs::read_to_string(case.golden()) {
        Err(_) => failures.push(format!("{label}: no golden file")),
        Ok(golden) => failures.extend(
            compare(&reply, &golden)
                .err()
                .map(|difference| format!("{label}: {difference}")),
        ),
    }
    failures
}

fn compare(reply: &Reply, golden_text: &str) -> Result<(), String> {
    let expected: Value = serde_json::from_str(golden_text).map_err(|e| format!("golden: {e}"))?;
    let actual = reply.golden();
    if expected != actual {
        let pretty =
            |value: &Value| shorten_lines(&serde_json::to_string_pretty(value).unwrap_or_default());
        return Err(format!(
            "answer differs\n--- expected\n{}\n--- got\n{}",
            pretty(&expected),
            pretty(&actual)
        ));
    }
    Ok(())
}

fn shorten_lines(text: &str) -> String {
    match text.char_indices().nth(4000) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rest_fixtures_match_their_goldens() {
    let template = fixture_database().await;
    let http = client();
    let cases = rest_cases();
    assert!(!cases.is_empty(), "no REST fixture cases found");
    let replies: Vec<Result<Reply, String>> = futures_util::stream::iter(&cases)
        .map(|case| run_case(&template, &http, case))
        .buffered(PARALLEL_CASES)
        .collect()
        .await;
    let mut failures = Vec::new();
    for (case, reply) in cases.iter().zip(replies) {
        let label = case.label();
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => {
                failures.push(format!("{label}: {error}"));
                continue;
            }
        };
        if let Err(broken) = check_invariants(&reply) {
            failures.push(format!("{label}: {broken}"));
        }
        failures.extend(check_golden(
            &case.golden(),
            &label,
            reply.golden_text(),
            |golden| compare(&reply, golden),
        ));
    }
    assert!(
        failures.is_empty(),
        "{} of {} REST fixture cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn rest_and_soap_fixture_trees_cover_the_same_cases() {
    let soap: BTreeSet<(String, String)> = soap_fixtures::cases()
        .into_iter()
        .map(|case| (case.operation, case.name))
        .collect();
    let rest: BTreeSet<(String, String)> = rest_cases()
        .into_iter()
        .filter(|case| case.folder != REST_ONLY)
        .map(|case| (case.folder, case.name))
        .collect();
    let only_soap: Vec<_> = soap
        .difference(&rest)
        .map(|(op, case)| format!("{op}/{case}"))
        .collect();
    let only_rest: Vec<_> = rest
        .difference(&soap)
        .map(|(op, case)| format!("{op}/{case}"))
        .collect();
    assert!(
        only_soap.is_empty() && only_rest.is_empty(),
        "SOAP cases without a REST twin: {only_soap:?}\nREST cases without a SOAP twin (REST-only cases go in {REST_ONLY}/): {only_rest:?}"
    );
    assert_eq!(
        soap_fixtures::operation_folders().len(),
        9,
        "nine operation folders"
    );

    // Every request has its golden and every golden its request.
    let mut orphans = Vec::new();
    for folder in std::fs::read_dir(rest_dir()).expect("fixtures/rest") {
        let dir = folder.expect("entry").path();
        let requests = files_ending(&dir, ".request.json");
        let goldens = files_ending(&dir, ".response.json");
        let folder = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for name in requests.iter().filter(|name| !goldens.contains(name)) {
            orphans.push(format!("{folder}/{name}: no .response.json"));
        }
        for name in goldens.iter().filter(|name| !requests.contains(name)) {
            orphans.push(format!(
                "{folder}/{name}: a .response.json without its request"
            ));
        }
    }
    assert!(orphans.is_empty(), "{orphans:#?}");
}

/// The outcome of a call: a SOAP Fault / REST request-level error, or a faultCode (0 = success).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    RequestRefused,
    Code(i64),
}

/// A recorded answer reduced to what both faces share: the outcome, `result` fields,
/// `results` entries and the other top-level fields (paging), all as text.
#[derive(Debug, Default, PartialEq, Eq)]
struct Values {
    result: Option<BTreeMap<String, String>>,
    results: Vec<BTreeMap<String, String>>,
    paging: BTreeMap<String, String>,
}

fn soap_outcome(golden: &str) -> Result<(Outcome, Values), String> {
    let body = match golden.trim_end().rsplit_once("\n<!-- HTTP ") {
        Some((body, _)) => body,
        None => return Err("the SOAP golden has no trailer".to_owned()),
    };
    let envelope = canonical::parse(body)?;
    let soap_body = envelope
        .children
        .iter()
        .find(|node| node.name == "Body")
        .ok_or("no Body")?;
    let answer = soap_body.children.first().ok_or("an empty Body")?;
    if answer.name == "Fault" {
        return Ok((Outcome::RequestRefused, Values::default()));
    }
    let child = |name: &str| answer.children.iter().find(|node| node.name == name);
    let code = child("errors")
        .and_then(|errors| errors.children.iter().find(|node| node.name == "faultCode"))
        .and_then(|code| code.text.trim().parse::<i64>().ok())
        .ok_or("no errors/faultCode")?;
    let fields = |node: &Node| -> BTreeMap<String, String> {
        node.children
            .iter()
            .map(|field| (field.name.clone(), field.text.clone()))
            .collect()
    };
    let values = Values {
        result: child("result").map(fields),
        results: answer
            .children
            .iter()
            .filter(|node| node.name == "results")
            .map(fields)
            .collect(),
        paging: answer
            .children
            .iter()
            .filter(|node| !["errors", "result", "results"].contains(&node.name.as_str()))
            .map(|node| (node.name.clone(), node.text.clone()))
            .collect(),
    };
    Ok((Outcome::Code(code), values))
}

fn rest_outcome(golden: &str) -> Result<(u16, Outcome, Values), String> {
    let golden: Value = serde_json::from_str(golden).map_err(|e| e.to_string())?;
    let status = golden["status"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .ok_or("no status")?;
    let body = &golden["body"];
    let outcome = match status {
        200 => Outcome::Code(0),
        207 | 401 | 403 | 422 => Outcome::Code(
            body.pointer("/errors/faultCode")
                .and_then(Value::as_i64)
                .ok_or("no errors.faultCode")?,
        ),
        _ => Outcome::RequestRefused,
    };
    // IdoSell's per-result faultCode and faultString are REST's own (the WSDL has none).
    let fields = |value: &Value| -> BTreeMap<String, String> {
        value.as_object().map_or_else(BTreeMap::new, |object| {
            object
                .iter()
                .filter(|(name, _)| !["faultCode", "faultString"].contains(&name.as_str()))
                .map(|(name, value)| (name.clone(), scalar_text(value)))
                .collect()
        })
    };
    let object = body.as_object().cloned().unwrap_or_default();
    let values = Values {
        result: object.get("result").map(fields),
        results: object
            .get("results")
            .and_then(Value::as_array)
            .map_or_else(Vec::new, |list| list.iter().map(fields).collect()),
        paging: object
            .iter()
            .filter(|(name, _)| !["errors", "result", "results"].contains(&name.as_str()))
            .map(|(name, value)| (name.clone(), scalar_text(value)))
            .collect(),
    };
    Ok((status, outcome, values))
}

/// Whether a REST status fits a SOAP outcome: a Fault ↔ a 4xx request-level error;
/// faultCode 0 ↔ 200, 1 ↔ 401/403, 2 ↔ 422, any other code ↔ 207 with that code.
fn fits(soap: &Outcome, status: u16, rest: &Outcome) -> bool {
    match soap {
        Outcome::RequestRefused => (400..500).contains(&status),
        Outcome::Code(code) => {
            rest == soap
                && match code {
                    0 => status == 200,
                    1 => status == 401 || status == 403,
                    2 => status == 422,
                    _ => status == 207,
                }
        }
    }
}

#[test]
fn rest_and_soap_give_the_same_domain_outcome() {
    let mut failures = Vec::new();
    let mut compared = 0;
    for &(operation, case, _) in PARITY_EXCEPTIONS {
        let exists = soap_fixtures::cases()
            .iter()
            .any(|c| c.operation == operation && c.name == case);
        assert!(
            exists,
            "parity exception {operation}/{case} names no SOAP case"
        );
    }
    for case in soap_fixtures::cases() {
        let label = format!("{}/{}", case.operation, case.name);
        if PARITY_EXCEPTIONS
            .iter()
            .any(|&(op, name, _)| op == case.operation && name == case.name)
        {
            continue;
        }
        let soap_golden = case
            .request
            .with_file_name(format!("{}.response.xml", case.name));
        let rest_golden = rest_dir()
            .join(&case.operation)
            .join(format!("{}.response.json", case.name));
        let (Ok(soap_text), Ok(rest_text)) = (
            std::fs::read_to_string(&soap_golden),
            std::fs::read_to_string(&rest_golden),
        ) else {
            failures.push(format!("{label}: a golden is missing"));
            continue;
        };
        let (soap, rest) = match (soap_outcome(&soap_text), rest_outcome(&rest_text)) {
            (Ok(soap), Ok(rest)) => (soap, rest),
            (Err(e), _) => {
                failures.push(format!("{label}: SOAP golden: {e}"));
                continue;
            }
            (_, Err(e)) => {
                failures.push(format!("{label}: REST golden: {e}"));
                continue;
            }
        };
        let ((soap_outcome, soap_values), (status, rest_outcome, rest_values)) = (soap, rest);
        compared += 1;
        if !fits(&soap_outcome, status, &rest_outcome) {
            failures.push(format!(
                "{label}: SOAP {soap_outcome:?} but REST HTTP {status} {rest_outcome:?}"
            ));
            continue;
        }
        if soap_outcome == Outcome::Code(0) && soap_values != rest_values {
            failures.push(format!(
                "{label}: the results differ\n  SOAP {soap_values:?}\n  REST {rest_values:?}"
            ));
        }
    }
    assert!(compared > 0, "no pairs compared");
    assert!(
        failures.is_empty(),
        "{} twin pairs disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
