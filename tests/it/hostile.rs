//! Hostile bodies at the HTTP level: over the size cap (declared or streamed), and the service
//! keeps answering others afterwards. XML-level attacks are fixtures under `fixtures/soap/`.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{
    TestDatabase, TestServer, client, element_text, post, soap11, soap11_headers,
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

#[tokio::test]
async fn a_declared_oversize_body_is_refused_before_it_is_read() {
    let database = TestDatabase::with_test_shop();
    let server = TestServer::start(&database.path).await;
    let address = server.base.trim_start_matches("http://").to_owned();
    // Declare 100 MB, send only the headers: the answer must come without the body.
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let head = "POST /soap/refunds HTTP/1.1\r\nHost: test\r\nContent-Type: text/xml\r\nContent-Length: 100000000\r\n\r\n";
        stream.write_all(head.as_bytes()).expect("send head");
        let mut buffer = vec![0; 4096];
        let read = stream.read(&mut buffer).expect("an answer before the body");
        String::from_utf8_lossy(&buffer[..read]).into_owned()
    })
    .await
    .expect("client thread");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("soap:Client"), "{answer}");
    assert!(answer.contains("larger than 1048576 bytes"), "{answer}");
    still_answers(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_streamed_oversize_body_is_cut_at_the_cap() {
    let database = TestDatabase::with_test_shop();
    let server = TestServer::start(&database.path).await;
    // No Content-Length: a chunked body that never ends within the cap.
    let chunks =
        futures_util::stream::iter((0..2048).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
    let response = client()
        .post(format!("{}/soap/refunds", server.base))
        .header("content-type", "text/xml; charset=utf-8")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    match response {
        Ok(response) => assert_eq!(response.status().as_u16(), 413),
        // The server may close the connection while the client is still sending.
        Err(error) => assert!(error.is_request() || error.is_body(), "{error}"),
    }
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
    let put = http
        .put(format!("{}/soap/refunds", server.base))
        .send()
        .await
        .expect("send");
    assert_eq!(put.status().as_u16(), 405);
    assert_eq!(
        put.headers().get("allow").map(|v| v.to_str().unwrap_or("")),
        Some("POST, GET ?wsdl")
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
    still_answers(&server).await;
    server.stop().await;
}
