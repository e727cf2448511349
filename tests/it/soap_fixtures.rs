//! Recorded-envelope conformance: every `fixtures/soap/{operation}/{case}.request.xml` is sent to
//! a fresh server over a copy of the fixture database, and the answer must equal the golden
//! `{case}.response.xml` canonically over the whole document, with its status and Content-Type
//! (the trailing comment `<!-- HTTP {status} {content-type} -->`).
//!
//! The fixture database is `fixtures/test-shop.json` plus the requests of `fixtures/soap/_setup/`
//! run in name order. A `{case}.request.headers` file, when present, replaces the default headers
//! (`Name: value` lines; `:path: /…` sends the request to another path).
//! `UPDATE_FIXTURES=1 cargo test` rewrites the goldens for review.

use std::path::{Path, PathBuf};

use crate::canonical;
use refunds_gateway::Config;

use crate::support::{
    Answer, TestDatabase, TestServer, check_golden, client, fixtures_dir, post, test_config,
};

pub struct Case {
    pub operation: String,
    pub name: String,
    pub request: PathBuf,
}

impl Case {
    fn golden(&self) -> PathBuf {
        self.request
            .with_file_name(format!("{}.response.xml", self.name))
    }

    fn headers_file(&self) -> PathBuf {
        self.request
            .with_file_name(format!("{}.request.headers", self.name))
    }
}

/// The operation folders under `fixtures/soap` (not `_setup`), sorted.
pub fn operation_folders() -> Vec<String> {
    let mut folders: Vec<String> = std::fs::read_dir(fixtures_dir().join("soap"))
        .expect("fixtures/soap")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| !name.starts_with('_'))
        .collect();
    folders.sort();
    folders
}

pub fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for operation in operation_folders() {
        let folder = fixtures_dir().join("soap").join(&operation);
        for request in requests_in(&folder) {
            let file = request.file_name().unwrap().to_string_lossy().into_owned();
            let name = file.trim_end_matches(".request.xml").to_owned();
            cases.push(Case {
                operation: operation.clone(),
                name,
                request,
            });
        }
    }
    cases
}

fn requests_in(folder: &Path) -> Vec<PathBuf> {
    let mut requests: Vec<PathBuf> = std::fs::read_dir(folder)
        .expect("fixture folder")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.to_string_lossy().ends_with(".request.xml"))
        .collect();
    requests.sort();
    requests
}

/// Default headers: the SOAP version's Content-Type and action, from the envelope namespace.
fn default_headers(body: &[u8], operation: &str) -> Vec<(String, String)> {
    let action = format!("urn:refunds-gateway:refunds#{operation}");
    let soap12 = String::from_utf8_lossy(body).contains("http://www.w3.org/2003/05/soap-envelope");
    if soap12 {
        vec![(
            "content-type".into(),
            format!("application/soap+xml; charset=utf-8; action=\"{action}\""),
        )]
    } else {
        vec![
            ("content-type".into(), "text/xml; charset=utf-8".into()),
            ("soapaction".into(), format!("\"{action}\"")),
        ]
    }
}

/// Reads `{case}.request.headers`: the headers to send and the path to send them to.
fn headers_of(case: &Case, body: &[u8]) -> (String, Vec<(String, String)>) {
    let Ok(text) = std::fs::read_to_string(case.headers_file()) else {
        return (
            "/soap/refunds".to_owned(),
            default_headers(body, &case.operation),
        );
    };
    let mut path = "/soap/refunds".to_owned();
    let mut headers = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        if let Some(value) = line.strip_prefix(":path:") {
            path = value.trim().to_owned();
        } else {
            let (name, value) = line.split_once(':').expect("`Name: value` header line");
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    (path, headers)
}

/// Builds the fixture database once: the test shop plus the `_setup` requests.
pub async fn fixture_database() -> TestDatabase {
    let database = TestDatabase::with_test_shop();
    run_setup(test_config(&database.path)).await;
    database
}

/// Sends the `_setup` requests, in name order, to a server started with `config`.
pub async fn run_setup(config: Config) {
    let server = TestServer::start_with(config).await;
    let http = client();
    for request in requests_in(&fixtures_dir().join("soap").join("_setup")) {
        let body = std::fs::read(&request).expect("setup request");
        let operation = operation_of(&body);
        let answer = post(
            &http,
            &format!("{}/soap/refunds", server.base),
            &default_headers(&body, &operation),
            body,
        )
        .await;
        assert!(
            answer.status == 200 && answer.body.contains("<faultCode>0</faultCode>"),
            "setup step {} failed: {answer:?}",
            request.display()
        );
    }
    server.stop().await;
}

/// Sends `case` to a server started with `config`; the answer, and the text a golden file
/// holds for it.
pub async fn run_case(http: &reqwest::Client, config: Config, case: &Case) -> (Answer, String) {
    let server = TestServer::start_with(config).await;
    let body = std::fs::read(&case.request).expect("request fixture");
    let (path, headers) = headers_of(case, &body);
    let answer = post(http, &format!("{}{path}", server.base), &headers, body).await;
    server.stop().await;
    let actual = format!("{}\n{}\n", answer.body.trim_end(), trailer(&answer));
    (answer, actual)
}

/// Compares `answer` with `case`'s golden file, never rewriting it; a failure line, if any.
pub fn compare_with_golden(case: &Case, answer: &Answer) -> Option<String> {
    let label = format!("{}/{}", case.operation, case.name);
    match std::fs::read_to_string(case.golden()) {
        Err(_) => Some(format!("{label}: no golden file")),
        Ok(golden) => check(answer, &golden)
            .err()
            .map(|difference| format!("{label}: {difference}")),
    }
}

fn operation_of(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let body_start = text.find(":Body>").expect("a Body") + ":Body>".len();
    let rest = text[body_start..].trim_start();
    let tag = rest.trim_start_matches('<');
    let name: String = tag
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == ':')
        .collect();
    name.rsplit(':').next().unwrap_or_default().to_owned()
}

fn trailer(answer: &Answer) -> String {
    format!("<!-- HTTP {} {} -->", answer.status, answer.content_type)
}

/// Compares an answer with a golden file; `Err` says how they differ.
fn check(answer: &Answer, golden_text: &str) -> Result<(), String> {
    let (golden_body, golden_trailer) = match golden_text.trim_end().rsplit_once("\n<!-- HTTP ") {
        Some((body, trailer)) => (body, format!("<!-- HTTP {trailer}")),
        None => return Err("the golden file has no `<!-- HTTP … -->` trailer".to_owned()),
    };
    if trailer(answer) != golden_trailer {
        return Err(format!(
            "status/content-type: expected {golden_trailer}, got {}",
            trailer(answer)
        ));
    }
    if !answer.body.starts_with("<?xml") {
        return Err("the response does not start with `<?xml`".to_owned());
    }
    let expected = canonical::parse(golden_body).map_err(|e| format!("golden: {e}"))?;
    let actual = canonical::parse(&answer.body).map_err(|e| format!("response: {e}"))?;
    if expected != actual {
        return Err(format!(
            "body differs\n--- expected\n{golden_body}\n--- got\n{}",
            answer.body
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soap_fixtures_match_their_goldens() {
    let template = fixture_database().await;
    let http = client();
    let mut failures = Vec::new();
    let cases = cases();
    assert!(!cases.is_empty(), "no fixture cases found");
    for case in &cases {
        let database = template.copy();
        let (answer, actual) = run_case(&http, test_config(&database.path), case).await;
        let label = format!("{}/{}", case.operation, case.name);
        failures.extend(check_golden(&case.golden(), &label, actual, |golden| {
            check(&answer, golden)
        }));
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixture cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
