//! Hostile bodies at the HTTP level: over the size cap (declared or streamed), and the service
//! keeps answering others afterwards. XML-level attacks are fixtures under `fixtures/soap/`.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use refunds_gateway::refunds::ledger::{AuditSealing, LedgerFuture, LedgerStore, LedgerWork};

use crate::support::{
    Backend, TestDatabase, TestLedger, TestServer, client, element_text, off_runtime,
    on_both_backends, post, soap11, soap11_headers,
};

async fn still_answers(server: &TestServer) {
    let http = client();
    let answer = post(
        &http,
        &format!("{}/soap/refunds", server.base),
        &soap11_headers("getPossibleAutoRefunds"),
        soap11(
            "getPossibleAutoRefunds",
            "<r:sourceType>order</r:sourceType><r:sourceId>2001</r:sourceId>",
        ),
    )
    .await;
    assert_eq!(
        element_text(&answer.body, "faultCode"),
        Some("0"),
        "{answer:?}"
    );
}

/// On a plain socket to `server`: writes `head`, then whatever `send` writes, and returns the
/// first read of the answer (up to 4 KiB).
async fn raw_exchange(
    server: &TestServer,
    head: String,
    send: impl FnOnce(&mut TcpStream) + Send + 'static,
) -> String {
    let address = server.base.trim_start_matches("http://").to_owned();
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(head.as_bytes()).expect("send head");
        send(&mut stream);
        let mut buffer = vec![0; 4096];
        let read = stream.read(&mut buffer).expect("an answer");
        String::from_utf8_lossy(&buffer[..read]).into_owned()
    })
    .await
    .expect("client thread")
}

#[tokio::test]
async fn a_declared_oversize_body_is_refused_before_it_is_read() {
    let database = TestDatabase::with_test_shop();
    let server = TestServer::start(&database.path).await;
    // Declare 100 MB, send only the headers: the answer must come without the body.
    let head = "POST /soap/refunds HTTP/1.1\r\nHost: test\r\nContent-Type: text/xml\r\nContent-Length: 100000000\r\n\r\n";
    let answer = raw_exchange(&server, head.to_owned(), |_| {}).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("soap:Client"), "{answer}");
    assert!(answer.contains("larger than 1048576 bytes"), "{answer}");
    still_answers(&server).await;
    server.stop().await;
}

/// A client that writes all of a (declared) oversize body before reading, as most HTTP clients
/// do, still gets its 413: the server drains the refused body instead of resetting the
/// connection under the client's write.
#[tokio::test]
async fn a_client_that_writes_its_whole_oversize_body_first_gets_the_413() {
    let database = TestDatabase::with_test_shop();
    let server = TestServer::start(&database.path).await;
    const LENGTH: usize = 8 * 1024 * 1024;
    let head = format!(
        "POST /soap/refunds HTTP/1.1\r\nHost: test\r\nContent-Type: text/xml\r\nContent-Length: {LENGTH}\r\n\r\n"
    );
    let answer = raw_exchange(&server, head, |stream| {
        stream
            .write_all(&vec![b' '; LENGTH])
            .expect("the whole body is taken");
    })
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    still_answers(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_streamed_oversize_body_is_cut_at_the_cap() {
    let database = TestDatabase::with_test_shop();
    let server = TestServer::start(&database.path).await;
    // No Content-Length: 1 KiB chunks until one past the 1 MiB cap, then the client waits for
    // the answer.
    let head = "POST /soap/refunds HTTP/1.1\r\nHost: test\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n";
    let answer = raw_exchange(&server, head.to_owned(), |stream| {
        let chunk = format!("400\r\n{}\r\n", " ".repeat(1024));
        for _ in 0..1025 {
            stream.write_all(chunk.as_bytes()).expect("send a chunk");
        }
    })
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("larger than 1048576 bytes"), "{answer}");
    still_answers(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_get_plain_errors_not_html() {
    let database = TestDatabase::with_test_shop();
    let server = TestServer::start(&database.path).await;
    let http = client();
    let missing = http
        .get(format!("{}/nowhere", server.base))
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status().as_u16(), 404);
    let body = missing.text().await.expect("body");
    assert!(
        body.contains("POST /soap/refunds") && !body.contains("<html"),
        "{body}"
    );
    let put = http
        .put(format!("{}/soap/refunds", server.base))
        .send()
        .await
        .expect("send");
    assert_eq!(put.status().as_u16(), 405);
    assert_eq!(
        put.headers().get("allow").map(|v| v.to_str().unwrap_or("")),
        Some("GET, HEAD, POST")
    );
    let body = put.text().await.expect("body");
    assert!(!body.contains("<html"), "{body}");
    let gate_get = http
        .get(format!(
            "{}/api/?gate=refunds/getRefundStatus/1/soap",
            server.base
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(gate_get.status().as_u16(), 405);
    assert_eq!(
        gate_get
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap_or("")),
        Some("POST")
    );
    still_answers(&server).await;
    server.stop().await;
}

/// Sends `head` (and nothing more) and returns what the server answers before it closes the
/// connection; panics if the server keeps it open for 10 s.
fn trickle(address: String, head: &'static str) -> String {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(head.as_bytes()).expect("send");
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .expect("the server closes the connection");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_idle_connections_do_not_starve_others() {
    let database = TestDatabase::with_test_shop();
    let mut config = crate::support::test_config(&database.path);
    config.header_read_timeout = Duration::from_millis(300);
    config.body_read_timeout = Duration::from_millis(300);
    config.max_connections = 64;
    let server = TestServer::start_with(config).await;
    let address = server.base.trim_start_matches("http://").to_owned();

    // Slowloris: headers that never end. The server closes the connection.
    let headers = tokio::task::spawn_blocking({
        let address = address.clone();
        move || {
            trickle(
                address,
                "POST /soap/refunds HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n",
            )
        }
    });
    // A body that never arrives: 408.
    let body = tokio::task::spawn_blocking({
        let address = address.clone();
        move || {
            trickle(
                address,
                "POST /soap/refunds HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n<soap:",
            )
        }
    });
    assert!(!headers.await.expect("thread").contains("200 OK"));
    assert!(body.await.expect("thread").starts_with("HTTP/1.1 408"));

    // Four times more idle connections than the server takes at once.
    let idle: Vec<TcpStream> = (0..256)
        .filter_map(|_| TcpStream::connect(&address).ok())
        .collect();
    assert!(idle.len() > 64);
    tokio::time::timeout(Duration::from_secs(10), still_answers(&server))
        .await
        .expect("answered beside 256 idle connections");
    drop(idle);
    server.stop().await;
}

on_both_backends!(hostile_bodies_are_refused_and_text_is_stored_verbatim);
async fn hostile_bodies_are_refused_and_text_is_stored_verbatim(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    let server = TestServer::start_with(ledger.config()).await;
    let http = client();
    let url = format!("{}/soap/refunds", server.base);
    let send = |body: Vec<u8>, encoding: Option<&'static str>| {
        let mut request = http
            .post(&url)
            .header("content-type", "text/xml")
            .body(body);
        if let Some(encoding) = encoding {
            request = request.header("content-encoding", encoding);
        }
        request.send()
    };
    // A compressed body (a gzip bomb would be one) is not decompressed: 415.
    let gzip = send(vec![0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0], Some("gzip"))
        .await
        .expect("send");
    assert_eq!(gzip.status().as_u16(), 415);
    // A 900 KB attribute and invalid UTF-8: SOAP Faults, no crash.
    let attribute = format!(
        r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" a="{}"><soap:Body/></soap:Envelope>"#,
        "x".repeat(900_000)
    );
    let fault = send(attribute.into_bytes(), None).await.expect("send");
    assert_eq!(fault.status().as_u16(), 500);
    assert!(
        fault
            .text()
            .await
            .expect("body")
            .contains("attribute value is longer than")
    );
    let invalid = send(b"<soap:Envelope \xff\xfe\xfd>".to_vec(), None)
        .await
        .expect("send");
    assert!(
        invalid
            .text()
            .await
            .expect("body")
            .contains("not valid UTF-8")
    );

    // SQL-looking text is data: stored as sent, nothing executed.
    let sneaky = "x'); DROP TABLE refunds; --";
    let params = format!(
        "<r:sourceType>order</r:sourceType><r:sourceId>2001</r:sourceId><r:refundValue>1.00</r:refundValue><r:refundCurrency>PLN</r:refundCurrency><r:refundDetails><r:paymentFormId>1</r:paymentFormId><r:account>{sneaky}</r:account><r:clientAccount>\" OR 1=1 --</r:clientAccount></r:refundDetails>"
    );
    let added = post(
        &http,
        &url,
        &soap11_headers("addManualRefund"),
        soap11("addManualRefund", &params),
    )
    .await;
    assert_eq!(
        element_text(&added.body, "faultCode"),
        Some("0"),
        "{}",
        added.body
    );
    still_answers(&server).await;
    server.stop().await;
    let account = ledger.text("SELECT account FROM refunds");
    let client_account = ledger.text("SELECT client_account FROM refunds");
    assert_eq!(
        (account.as_str(), client_account.as_str()),
        (sneaky, "\" OR 1=1 --")
    );
}

/// A storage adapter that panics on its first short read (outside any transaction it could
/// catch) and otherwise is the real store: the panic reaches the request's handler.
struct PanickingReads {
    inner: std::sync::Arc<dyn LedgerStore>,
    armed: std::sync::atomic::AtomicBool,
}

impl LedgerStore for PanickingReads {
    fn run_write(&self, work: LedgerWork) -> LedgerFuture {
        self.inner.run_write(work)
    }
    fn run_read(&self, work: LedgerWork) -> LedgerFuture {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            panic!("an adapter bug");
        }
        self.inner.run_read(work)
    }
    fn run_scan(&self, work: LedgerWork) -> LedgerFuture {
        self.inner.run_scan(work)
    }
    fn audit_sealing(&self) -> AuditSealing {
        self.inner.audit_sealing()
    }
    fn close(&self) {
        self.inner.close()
    }
}

on_both_backends!(a_panic_in_a_handler_becomes_a_fault_not_a_dropped_connection);
async fn a_panic_in_a_handler_becomes_a_fault_not_a_dropped_connection(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    let config = ledger.config();
    let store =
        off_runtime(|| refunds_gateway::store::open(&config.database).expect("open the store"));
    let store = std::sync::Arc::new(PanickingReads {
        inner: store,
        armed: std::sync::atomic::AtomicBool::new(true),
    });
    let server = TestServer::start_on(config, store).await;
    let answer = post(
        &client(),
        &format!("{}/soap/refunds", server.base),
        &soap11_headers("getPossibleAutoRefunds"),
        soap11(
            "getPossibleAutoRefunds",
            "<r:sourceType>order</r:sourceType><r:sourceId>2001</r:sourceId>",
        ),
    )
    .await;
    assert_eq!(answer.status, 500);
    assert!(
        answer.body.contains("<faultcode>soap:Server</faultcode>"),
        "{}",
        answer.body
    );
    assert!(
        !answer.body.contains("panic") && !answer.body.contains("adapter bug"),
        "the panic's text stays in the log: {}",
        answer.body
    );
    still_answers(&server).await;
    server.stop().await;
}
