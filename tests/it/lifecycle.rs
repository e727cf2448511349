//! The whole refunds lifecycle over HTTP, in SOAP 1.1 and SOAP 1.2: add → update → confirm →
//! status; add → cancel; list with paging.

use crate::support::{
    Answer, Backend, TEST_LOGIN, TestLedger, TestServer, client, element_text, on_both_backends,
    post, test_key,
};

#[derive(Clone, Copy)]
enum Version {
    Soap11,
    Soap12,
}

struct Soap {
    http: reqwest::Client,
    url: String,
    version: Version,
}

impl Soap {
    async fn call(&self, operation: &str, params: &str) -> Answer {
        let (namespace, content_type) = match self.version {
            Version::Soap11 => (
                "http://schemas.xmlsoap.org/soap/envelope/",
                "text/xml; charset=utf-8".to_owned(),
            ),
            Version::Soap12 => (
                "http://www.w3.org/2003/05/soap-envelope",
                format!(
                    "application/soap+xml; charset=utf-8; action=\"urn:refunds-gateway:refunds#{operation}\""
                ),
            ),
        };
        let body = format!(
            r#"<?xml version="1.0" encoding="utf-8"?><env:Envelope xmlns:env="{namespace}"><env:Body><{operation} xmlns="urn:refunds-gateway:refunds"><authenticate><userLogin>{TEST_LOGIN}</userLogin><authenticateKey>{key}</authenticateKey></authenticate><params>{params}</params></{operation}></env:Body></env:Envelope>"#,
            key = test_key()
        );
        let headers = vec![("content-type".to_owned(), content_type)];
        let answer = post(&self.http, &self.url, &headers, body.into_bytes()).await;
        assert_eq!(answer.status, 200, "{operation}: {answer:?}");
        let expected_type = match self.version {
            Version::Soap11 => "text/xml; charset=utf-8",
            Version::Soap12 => "application/soap+xml; charset=utf-8",
        };
        assert_eq!(answer.content_type, expected_type);
        assert!(
            answer.body.contains(namespace),
            "answered in the request's SOAP version"
        );
        answer
    }

    /// Calls and expects faultCode 0.
    async fn ok(&self, operation: &str, params: &str) -> String {
        let answer = self.call(operation, params).await;
        assert_eq!(
            element_text(&answer.body, "faultCode"),
            Some("0"),
            "{operation}: {}",
            answer.body
        );
        answer.body
    }
}

async fn lifecycle(backend: Backend, version: Version) {
    let ledger = TestLedger::with_test_shop(backend);
    let server = TestServer::start_with(ledger.config()).await;
    let soap = Soap {
        http: client(),
        url: format!("{}/soap/refunds", server.base),
        version,
    };

    // add → update → confirm → status (automatic refund of an order's payment)
    let added = soap
        .ok(
            "addAutomaticRefundForOrder",
            "<sourceId>2001</sourceId><paymentId>11</paymentId><refundValue>40.00</refundValue><refundCurrency>PLN</refundCurrency>",
        )
        .await;
    let auto_id = element_text(&added, "refundId")
        .expect("refundId")
        .to_owned();
    assert_eq!(auto_id, "20", "refund ids continue the payments' sequence");
    let at = format!(
        "<sourceType>order</sourceType><sourceId>2001</sourceId><paymentId>{auto_id}</paymentId>"
    );
    let updated = soap
        .ok(
            "updateRefund",
            &format!("{at}<refundValue>45.5</refundValue><refundCurrency>PLN</refundCurrency>"),
        )
        .await;
    assert_eq!(element_text(&updated, "updateResult"), Some("true"));
    let status = soap.ok("getRefundStatus", &at).await;
    assert_eq!(element_text(&status, "refundStatus"), Some("New"));
    assert_eq!(element_text(&status, "refundValue"), Some("45.50"));
    assert_eq!(
        element_text(&status, "refundDateAdd"),
        Some("2026-11-20 12:00:00")
    );
    assert_eq!(element_text(&status, "refundDateConfirm"), Some(""));
    let confirmed = soap.ok("confirmRefund", &at).await;
    assert_eq!(element_text(&confirmed, "confirmResult"), Some("true"));
    let status = soap.ok("getRefundStatus", &at).await;
    assert_eq!(element_text(&status, "refundStatus"), Some("Processing"));
    assert_eq!(
        element_text(&status, "refundDateConfirm"),
        Some("2026-11-20 12:00:00")
    );
    assert_eq!(element_text(&status, "refundCurrency"), Some("PLN"));

    // add → cancel (manual refund of a claim), and the amount is released
    let manual = soap
        .ok(
            "addManualRefund",
            "<sourceType>rma</sourceType><sourceId>801</sourceId><refundValue>30.00</refundValue><refundCurrency>PLN</refundCurrency><refundDetails><paymentFormId>3</paymentFormId></refundDetails>",
        )
        .await;
    let manual_id = element_text(&manual, "refundId")
        .expect("refundId")
        .to_owned();
    let rma_at = format!(
        "<sourceType>rma</sourceType><sourceId>801</sourceId><paymentId>{manual_id}</paymentId>"
    );
    let again = soap
        .call(
            "addManualRefund",
            "<sourceType>rma</sourceType><sourceId>801</sourceId><refundValue>0.01</refundValue><refundCurrency>PLN</refundCurrency><refundDetails><paymentFormId>3</paymentFormId></refundDetails>",
        )
        .await;
    assert_eq!(
        element_text(&again.body, "faultCode"),
        Some("4003"),
        "the claim is fully reserved"
    );
    let canceled = soap.ok("cancelRefund", &rma_at).await;
    assert_eq!(element_text(&canceled, "resultStatus"), Some("true"));
    let status = soap.ok("getRefundStatus", &rma_at).await;
    assert_eq!(element_text(&status, "refundStatus"), Some("Canceled"));
    let possible = soap
        .ok(
            "getPossibleAutoRefunds",
            "<sourceType>rma</sourceType><sourceId>801</sourceId>",
        )
        .await;
    assert_eq!(
        element_text(&possible, "value"),
        Some("30.00"),
        "cancelling released the claim's value"
    );

    // list with paging: three unapproved refunds, two per page
    for value in ["1.00", "2.00", "3.00"] {
        soap.ok(
            "addManualRefund",
            &format!("<sourceType>order</sourceType><sourceId>2004</sourceId><refundValue>{value}</refundValue><refundCurrency>PLN</refundCurrency><refundDetails><paymentFormId>1</paymentFormId></refundDetails>"),
        )
        .await;
    }
    let first = soap.ok("retrieveRefundsList", "<sourceType>order</sourceType><resultsPage>0</resultsPage><resultsLimit>2</resultsLimit>").await;
    assert_eq!(first.matches("<results>").count(), 2);
    assert_eq!(element_text(&first, "resultsNumberAll"), Some("3"));
    assert_eq!(element_text(&first, "resultsNumberPage"), Some("2"));
    let second = soap.ok("retrieveRefundsList", "<sourceType>order</sourceType><resultsPage>1</resultsPage><resultsLimit>2</resultsLimit>").await;
    assert_eq!(second.matches("<results>").count(), 1);
    assert_eq!(element_text(&second, "refundValue"), Some("3.00"));
    assert_eq!(element_text(&second, "resultsPage"), Some("1"));
    server.stop().await;
}

on_both_backends!(lifecycle_over_soap_1_1);
async fn lifecycle_over_soap_1_1(backend: Backend) {
    lifecycle(backend, Version::Soap11).await;
}

on_both_backends!(lifecycle_over_soap_1_2);
async fn lifecycle_over_soap_1_2(backend: Backend) {
    lifecycle(backend, Version::Soap12).await;
}

on_both_backends!(faults_that_need_two_steps);
async fn faults_that_need_two_steps(backend: Backend) {
    let ledger = TestLedger::with_test_shop(backend);
    ledger.maintain(|maintenance| {
        let read_only = refunds_gateway::refunds::types::Scopes {
            read: true,
            write: false,
            confirm: false,
        };
        crate::support::add_user(maintenance, "auditor", "secret", read_only);
    });
    let server = TestServer::start_with(ledger.config()).await;
    let soap = Soap {
        http: client(),
        url: format!("{}/soap/refunds", server.base),
        version: Version::Soap11,
    };
    let return_603 = "<sourceType>return</sourceType><sourceId>603</sourceId>";
    let first = soap.ok("addAutomaticRefund", return_603).await;
    assert_eq!(element_text(&first, "refundId"), Some("20"));
    let possible = soap.ok("getPossibleAutoRefunds", return_603).await;
    assert!(
        !possible.contains("<results>"),
        "nothing is left to refund: {possible}"
    );
    let second = soap.call("addAutomaticRefund", return_603).await;
    assert_eq!(
        element_text(&second.body, "faultCode"),
        Some("4001"),
        "{}",
        second.body
    );

    // A user without the write scope is refused with faultCode 1, and nothing is added.
    let key = refunds_gateway::refunds::legacy_key(
        "20261120",
        &refunds_gateway::refunds::password_sha1_hex("secret"),
    );
    let body = format!(
        r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><addAutomaticRefund xmlns="urn:refunds-gateway:refunds"><authenticate><userLogin>auditor</userLogin><authenticateKey>{key}</authenticateKey></authenticate><params><sourceType>return</sourceType><sourceId>601</sourceId></params></addAutomaticRefund></soap:Body></soap:Envelope>"#
    );
    let headers = vec![("content-type".to_owned(), "text/xml".to_owned())];
    let refused = post(&soap.http, &soap.url, &headers, body.into_bytes()).await;
    assert_eq!(
        element_text(&refused.body, "faultCode"),
        Some("1"),
        "{}",
        refused.body
    );
    assert!(
        refused.body.contains("needs scope 'write'"),
        "{}",
        refused.body
    );
    let list = soap
        .ok("retrieveRefundsList", "<sourceType>return</sourceType>")
        .await;
    assert_eq!(
        element_text(&list, "resultsNumberAll"),
        Some("2"),
        "only return 603's two refunds exist"
    );
    server.stop().await;
}
