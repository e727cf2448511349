//! The OpenAPI document and the REST router must agree: the same operations with the same verbs,
//! every reference resolvable, every documented status present (errors with their `X-Error`
//! header), the served document the bundled one on every version (with that version's paths),
//! and a wrong verb answered 405 with the documented verb in `Allow`, alike on v1 to v8.
//! (`tests/schemathesis/run` then checks the answers themselves against the document.)

use std::collections::{BTreeMap, BTreeSet};

use refunds_gateway::rest::{OPENAPI, ROUTES, VERSIONS};
use serde_json::Value;

use crate::support::{TEST_API_KEY, TestDatabase, TestServer, client, get};

const PATH_PREFIX: &str = "/api/admin/v6/refunds/";
const DOC_PATH: &str = "/api/doc/admin/v6/json";
/// The statuses the REST face answers every operation with (README, API.md).
const DOCUMENTED_STATUSES: [&str; 7] = ["200", "207", "401", "403", "404", "422", "500"];
/// And the writes (POST, PUT), which take a body and an idempotency key.
const DOCUMENTED_WRITE_STATUSES: [&str; 2] = ["409", "413"];
/// The verbs an OpenAPI path item can hold.
const VERBS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    serde_json::from_str(OPENAPI).expect("src/rest/openapi.json is JSON")
}

/// `(operation name, upper-case verb)` for every operation of the document, with the operation.
fn documented_operations(document: &Value) -> Vec<(String, String, Value)> {
    let paths = document["paths"]
        .as_object()
        .expect("the document has `paths`");
    let mut operations = Vec::new();
    for (path, item) in paths {
        let name = path
            .strip_prefix(PATH_PREFIX)
            .unwrap_or_else(|| panic!("path {path} is not under {PATH_PREFIX}"));
        assert!(
            !name.is_empty() && !name.contains('/'),
            "path {path} is not {PATH_PREFIX}{{operation}}"
        );
        let item = item
            .as_object()
            .unwrap_or_else(|| panic!("{path} is not an object"));
        for (key, operation) in item {
            if VERBS.contains(&key.as_str()) {
                operations.push((name.to_owned(), key.to_uppercase(), operation.clone()));
            } else {
                assert!(
                    ["summary", "description", "servers", "parameters"].contains(&key.as_str())
                        || key.starts_with("x-"),
                    "{path} has an unexpected key {key}"
                );
            }
        }
    }
    operations
}

fn routes() -> BTreeMap<String, String> {
    ROUTES
        .iter()
        .map(|(name, verb)| ((*name).to_owned(), (*verb).to_owned()))
        .collect()
}

#[test]
fn every_documented_operation_is_routed_with_its_verb() {
    let routes = routes();
    let document = document();
    for (name, verb, _) in documented_operations(&document) {
        match routes.get(&name) {
            None => panic!("the document has {verb} {PATH_PREFIX}{name}, which rest::ROUTES lacks"),
            Some(routed) => assert_eq!(
                routed, &verb,
                "{name}: the document says {verb}, rest::ROUTES says {routed}"
            ),
        }
    }
}

#[test]
fn every_route_is_documented_once() {
    let document = document();
    let documented = documented_operations(&document);
    for (name, verb) in routes() {
        let found: Vec<&String> = documented
            .iter()
            .filter(|(documented, _, _)| *documented == name)
            .map(|(_, verb, _)| verb)
            .collect();
        assert_eq!(
            found,
            vec![&verb],
            "{verb} {PATH_PREFIX}{name} should be documented exactly once, with that verb"
        );
    }
    assert_eq!(
        documented.len(),
        ROUTES.len(),
        "the document has operations rest::ROUTES lacks"
    );
}

#[test]
fn every_operation_id_is_the_operation_name() {
    let document = document();
    let mut ids = BTreeSet::new();
    for (name, verb, operation) in documented_operations(&document) {
        assert_eq!(
            operation["operationId"].as_str(),
            Some(name.as_str()),
            "{verb} {name}: operationId"
        );
        assert!(ids.insert(name.clone()), "operationId {name} is used twice");
    }
}

/// Every `$ref` in `value`, with where it was found.
fn references(value: &Value, at: &str, found: &mut Vec<(String, String)>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                if key == "$ref" {
                    let target = child
                        .as_str()
                        .unwrap_or_else(|| panic!("{at}/$ref is not a string"));
                    found.push((at.to_owned(), target.to_owned()));
                } else {
                    let escaped = key.replace('~', "~0").replace('/', "~1");
                    references(child, &format!("{at}/{escaped}"), found);
                }
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                references(child, &format!("{at}/{index}"), found);
            }
        }
        _ => {}
    }
}

#[test]
fn every_reference_resolves() {
    let document = document();
    let mut found = Vec::new();
    references(&document, "#", &mut found);
    assert!(
        found.len() > 9,
        "the document should share its schemas by $ref"
    );
    for (at, target) in &found {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{at}: {target} is not a local reference"));
        let resolved = document
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{at}: {target} does not resolve"));
        assert!(resolved.is_object(), "{at}: {target} is not an object");
    }
    // And everything under components is used.
    let used: BTreeSet<&str> = found.iter().map(|(_, target)| target.as_str()).collect();
    for (kind, entries) in document["components"].as_object().expect("components") {
        if kind == "securitySchemes" {
            continue;
        }
        for name in entries.as_object().expect("a components map").keys() {
            let target = format!("#/components/{kind}/{name}");
            assert!(
                used.contains(target.as_str()),
                "{target} is never referenced"
            );
        }
    }
}

/// A response object, following one `$ref`.
fn resolve<'d>(document: &'d Value, value: &'d Value) -> &'d Value {
    match value["$ref"].as_str() {
        Some(target) => document
            .pointer(target.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("{target} does not resolve")),
        None => value,
    }
}

#[test]
fn every_operation_documents_its_statuses_as_json() {
    let document = document();
    for (name, verb, operation) in documented_operations(&document) {
        let responses = operation["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{verb} {name} has no responses"));
        let writes: &[&str] = if verb == "GET" {
            &[]
        } else {
            &DOCUMENTED_WRITE_STATUSES
        };
        for &status in DOCUMENTED_STATUSES.iter().chain(writes) {
            let response = responses
                .get(status)
                .unwrap_or_else(|| panic!("{verb} {name} does not document {status}"));
            let response = resolve(&document, response);
            assert!(
                response["description"].is_string(),
                "{verb} {name} {status}: no description"
            );
            assert!(
                response["content"]["application/json"]["schema"].is_object(),
                "{verb} {name} {status}: no application/json schema"
            );
            if status != "200" {
                let header = resolve(&document, &response["headers"]["X-Error"]);
                assert_eq!(
                    header["required"],
                    Value::Bool(true),
                    "{verb} {name} {status}: X-Error is not declared as always sent"
                );
            }
        }
        if verb == "GET" {
            for status in DOCUMENTED_WRITE_STATUSES {
                assert!(
                    responses.get(status).is_none(),
                    "{verb} {name} documents {status}, which a GET never gets"
                );
            }
        }
        assert!(
            responses.get("429").is_some(),
            "{verb} {name}: too many failed authentications get 429, so it is documented"
        );
        let has_input = match verb.as_str() {
            "GET" => operation["parameters"].is_array(),
            _ => operation["requestBody"]["content"]["application/json"]["schema"].is_object(),
        };
        assert!(
            has_input,
            "{verb} {name}: GET takes query parameters, POST and PUT a JSON body"
        );
    }
}

#[tokio::test]
async fn every_version_serves_the_document_with_its_own_paths() {
    let database = TestDatabase::with_test_shop();
    let server = TestServer::start(&database.path).await;
    let http = client();
    for version in VERSIONS {
        let url = format!("{}/api/doc/admin/v{version}/json", server.base);
        let answer = get(&http, &url).await;
        assert_eq!(answer.status, 200, "v{version}: {answer:?}");
        let served: Value = serde_json::from_str(&answer.body).expect("JSON");
        let expected = OPENAPI.replace(
            "\"/api/admin/v6/refunds/",
            &format!("\"/api/admin/v{version}/refunds/"),
        );
        assert_eq!(
            served,
            serde_json::from_str::<Value>(&expected).expect("JSON"),
            "v{version}: the bundled document with v{version} paths"
        );
        let paths = served["paths"].as_object().expect("paths");
        assert_eq!(paths.len(), ROUTES.len());
        assert!(
            paths
                .keys()
                .all(|path| path.starts_with(&format!("/api/admin/v{version}/refunds/"))),
            "v{version}: {:?}",
            paths.keys()
        );
    }
    assert_eq!(*VERSIONS.end(), 8, "the JS client's default, v8, is served");
    for unknown in ["v0", "v9", "v06", "v+6", "6"] {
        let url = format!("{}/api/doc/admin/{unknown}/json", server.base);
        let answer = get(&http, &url).await;
        assert_eq!(answer.status, 404, "{unknown}: {answer:?}");
        assert!(
            answer.body.contains("v1, v2, v3, v4, v5, v6, v7, v8"),
            "{unknown}: the 404 lists the versions served: {}",
            answer.body
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn the_served_document_is_the_bundled_one() {
    let database = TestDatabase::with_test_shop();
    let server = TestServer::start(&database.path).await;
    let answer = get(&client(), &format!("{}{DOC_PATH}", server.base)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let media_type = answer.content_type.split(';').next().unwrap_or("").trim();
    assert_eq!(media_type, "application/json", "{answer:?}");
    assert_eq!(
        answer.body, OPENAPI,
        "the served document differs from src/rest/openapi.json"
    );
    let served: Value = serde_json::from_str(&answer.body).expect("the served document is JSON");
    assert_eq!(served, document());
    assert!(
        served["openapi"]
            .as_str()
            .is_some_and(|version| version.starts_with("3.")),
        "an OpenAPI 3 document"
    );
    server.stop().await;
}

/// One answer as compared across versions.
#[derive(Debug, PartialEq, Eq)]
struct Answer405 {
    status: u16,
    allow: Option<String>,
    content_type: String,
    body: String,
}

async fn call(http: &reqwest::Client, verb: &str, url: &str) -> Answer405 {
    let method = reqwest::Method::from_bytes(verb.as_bytes()).expect("a verb");
    let mut request = http.request(method, url).header("x-api-key", TEST_API_KEY);
    if verb != "GET" && verb != "HEAD" {
        request = request
            .header("content-type", "application/json")
            .body(r#"{"params": {}}"#);
    }
    let response = request.send().await.expect("request sent");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let allow = header("allow");
    let content_type = header("content-type").unwrap_or_default();
    let status = response.status().as_u16();
    let body = response.text().await.expect("response body");
    Answer405 {
        status,
        allow,
        content_type,
        body,
    }
}

#[tokio::test]
async fn a_wrong_verb_gets_405_with_the_documented_verb_on_every_version() {
    let database = TestDatabase::with_test_shop();
    let server = TestServer::start(&database.path).await;
    let http = client();
    let document = document();
    let operations = documented_operations(&document);
    assert_eq!(operations.len(), ROUTES.len());
    for (name, documented, _) in &operations {
        for verb in ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"] {
            if verb == documented {
                continue;
            }
            let v6 = call(&http, verb, &format!("{}{PATH_PREFIX}{name}", server.base)).await;
            assert_eq!(v6.status, 405, "{verb} {name}: {v6:?}");
            assert_eq!(
                v6.allow.as_deref(),
                Some(documented.as_str()),
                "{verb} {name}: Allow"
            );
            if verb != "HEAD" {
                assert!(
                    v6.content_type.starts_with("application/json"),
                    "{verb} {name}: {v6:?}"
                );
                let body: Value = serde_json::from_str(&v6.body)
                    .unwrap_or_else(|error| panic!("{verb} {name}: {error}: {v6:?}"));
                assert_eq!(body["errors"]["faultCode"], 2, "{verb} {name}: {v6:?}");
            }
            for version in VERSIONS {
                let url = format!("{}/api/admin/v{version}/refunds/{name}", server.base);
                let other = call(&http, verb, &url).await;
                assert_eq!(
                    other, v6,
                    "{verb} {name}: v{version} and v6 answer differently"
                );
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn the_documented_verb_is_routed_on_every_version() {
    // Without a key every operation answers 401 in JSON: the route exists, whatever the version.
    let database = TestDatabase::with_test_shop();
    let server = TestServer::start(&database.path).await;
    let http = client();
    for (name, verb) in routes() {
        let mut answers = Vec::new();
        for version in VERSIONS {
            let url = format!("{}/api/admin/v{version}/refunds/{name}", server.base);
            let method = reqwest::Method::from_bytes(verb.as_bytes()).expect("a verb");
            let response = http
                .request(method, &url)
                .header("content-type", "application/json")
                .body(if verb == "GET" {
                    ""
                } else {
                    r#"{"params": {}}"#
                })
                .send()
                .await
                .expect("request sent");
            let status = response.status().as_u16();
            let body = response.text().await.expect("response body");
            assert_eq!(status, 401, "{verb} v{version} {name}: {body}");
            answers.push(body);
        }
        assert!(
            answers.windows(2).all(|pair| pair[0] == pair[1]),
            "{verb} {name}: the versions answer differently: {answers:?}"
        );
    }
    server.stop().await;
}
