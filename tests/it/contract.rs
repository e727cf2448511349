//! The executable contract: the WSDL, the operation registry, the dispatcher, the fixture folders
//! and the golden responses must agree, and every response must be valid against the WSDL.

use std::collections::BTreeSet;

use refunds_gateway::operations::OPERATION_NAMES;
use refunds_gateway::soap::TARGET_NAMESPACE;
use refunds_gateway::soap::wsdl::WSDL;

use crate::canonical::{self, Node};
use crate::schema::{
    self, Declaration, SOAP11_ENVELOPE_NS, SOAP12_ENVELOPE_NS, WSDL_NS, bundled_schema,
    read_declarations, validate_response,
};
use crate::soap_fixtures::operation_folders;
use crate::support::{TestDatabase, TestServer, client, fixtures_dir, get, post, soap11_headers};

const WSDL_SOAP11_NS: &str = "http://schemas.xmlsoap.org/wsdl/soap/";
const WSDL_SOAP12_NS: &str = "http://schemas.xmlsoap.org/wsdl/soap12/";
const SOAP_HTTP_TRANSPORT: &str = "http://schemas.xmlsoap.org/soap/http";
/// Where the bundled WSDL's ports point until the server rewrites them.
const PLACEHOLDER_ADDRESS: &str = "http://localhost:8080/soap/refunds";

fn definitions() -> Declaration {
    let definitions = read_declarations(WSDL).expect("the bundled WSDL parses");
    assert!(
        definitions.is(WSDL_NS, "definitions"),
        "the WSDL's root is <{}>",
        definitions.name
    );
    assert_eq!(
        definitions.attribute("targetNamespace"),
        Some(TARGET_NAMESPACE)
    );
    definitions
}

fn name_of(declaration: &Declaration) -> &str {
    declaration
        .required("name")
        .unwrap_or_else(|error| panic!("{error}"))
}

fn qname<'d>(declaration: &'d Declaration, attribute: &str) -> (&'d str, &'d str) {
    declaration
        .qname(attribute)
        .unwrap_or_else(|error| panic!("{error}"))
}

fn only<'d>(parent: &'d Declaration, namespace: &str, name: &str) -> &'d Declaration {
    parent
        .only_child(namespace, name)
        .unwrap_or_else(|error| panic!("{error}"))
}

/// The operations of the WSDL's one portType, in document order.
fn wsdl_operation_names() -> Vec<String> {
    let definitions = definitions();
    let port_types: Vec<&Declaration> = definitions.children_named(WSDL_NS, "portType").collect();
    assert_eq!(port_types.len(), 1, "the WSDL should have one portType");
    port_types[0]
        .children_named(WSDL_NS, "operation")
        .map(|operation| name_of(operation).to_owned())
        .collect()
}

#[test]
fn port_type_operations_are_the_registry() {
    assert_eq!(
        wsdl_operation_names(),
        OPERATION_NAMES,
        "the WSDL portType and operations::OPERATION_NAMES disagree (names or order)"
    );
}

/// The one `wsdl:message` called `name`.
fn message<'d>(definitions: &'d Declaration, name: &str) -> &'d Declaration {
    let mut found = definitions
        .children_named(WSDL_NS, "message")
        .filter(|message| name_of(message) == name);
    let message = found
        .next()
        .unwrap_or_else(|| panic!("no wsdl:message `{name}`"));
    assert!(
        found.next().is_none(),
        "wsdl:message `{name}` is declared twice"
    );
    message
}

#[test]
fn messages_wrap_the_operation_elements_document_literal() {
    let definitions = definitions();
    let port_type = only(&definitions, WSDL_NS, "portType");
    let mut used_messages = BTreeSet::new();
    let mut wrapper_elements = BTreeSet::new();
    for operation in port_type.children_named(WSDL_NS, "operation") {
        let name = name_of(operation);
        for (direction, element) in [
            ("input", name.to_owned()),
            ("output", format!("{name}Response")),
        ] {
            let reference = only(operation, WSDL_NS, direction);
            let (namespace, message_name) = qname(reference, "message");
            assert_eq!(
                namespace, TARGET_NAMESPACE,
                "{name} {direction}: message namespace"
            );
            used_messages.insert(message_name.to_owned());
            let parts: Vec<&Declaration> = message(&definitions, message_name)
                .children_named(WSDL_NS, "part")
                .collect();
            assert_eq!(
                parts.len(),
                1,
                "message `{message_name}`: one part (wrapped style)"
            );
            assert_eq!(
                parts[0].attribute("name"),
                Some("parameters"),
                "message `{message_name}`: the part is named `parameters`"
            );
            assert_eq!(
                qname(parts[0], "element"),
                (TARGET_NAMESPACE, element.as_str()),
                "message `{message_name}` ({name} {direction}) wraps the wrong element"
            );
            wrapper_elements.insert(element);
        }
    }
    // The one header message: the optional idempotency key of the write operations.
    let header = message(&definitions, "idempotencyKeyHeader");
    let header_parts: Vec<&Declaration> = header.children_named(WSDL_NS, "part").collect();
    assert_eq!(header_parts.len(), 1);
    assert_eq!(header_parts[0].attribute("name"), Some("idempotencyKey"));
    assert_eq!(
        qname(header_parts[0], "element"),
        (TARGET_NAMESPACE, "idempotencyKey")
    );
    used_messages.insert("idempotencyKeyHeader".to_owned());
    wrapper_elements.insert("idempotencyKey".to_owned());
    let declared_messages: BTreeSet<String> = definitions
        .children_named(WSDL_NS, "message")
        .map(|message| name_of(message).to_owned())
        .collect();
    assert_eq!(
        declared_messages, used_messages,
        "messages no operation uses"
    );
    // Every global element of the schema is a request or response wrapper, and each exists.
    let global_elements: BTreeSet<String> = bundled_schema()
        .global_element_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        global_elements, wrapper_elements,
        "the schema's global elements are not exactly {{operation}}, {{operation}}Response and idempotencyKey"
    );
}

#[test]
fn both_bindings_cover_every_operation() {
    let definitions = definitions();
    let port_type_name = name_of(only(&definitions, WSDL_NS, "portType"));
    let bindings: Vec<&Declaration> = definitions.children_named(WSDL_NS, "binding").collect();
    assert_eq!(bindings.len(), 2, "one SOAP 1.1 and one SOAP 1.2 binding");
    let service = only(&definitions, WSDL_NS, "service");
    for soap in [WSDL_SOAP11_NS, WSDL_SOAP12_NS] {
        let binding = bindings
            .iter()
            .find(|binding| binding.children_named(soap, "binding").next().is_some())
            .unwrap_or_else(|| panic!("no binding with a {{{soap}}}binding"));
        let binding_name = name_of(binding);
        assert_eq!(qname(binding, "type"), (TARGET_NAMESPACE, port_type_name));
        let soap_binding = only(binding, soap, "binding");
        assert_eq!(
            soap_binding.attribute("style"),
            Some("document"),
            "{binding_name}"
        );
        assert_eq!(
            soap_binding.attribute("transport"),
            Some(SOAP_HTTP_TRANSPORT),
            "{binding_name}"
        );
        let operations: Vec<&Declaration> = binding.children_named(WSDL_NS, "operation").collect();
        let names: Vec<&str> = operations
            .iter()
            .map(|operation| name_of(operation))
            .collect();
        assert_eq!(names, OPERATION_NAMES, "binding {binding_name}: operations");
        for operation in operations {
            let name = name_of(operation);
            let soap_operation = only(operation, soap, "operation");
            assert_eq!(
                soap_operation.attribute("soapAction"),
                Some(format!("{TARGET_NAMESPACE}#{name}").as_str()),
                "{binding_name}/{name}: soapAction"
            );
            assert!(
                soap_operation
                    .attribute("style")
                    .is_none_or(|style| style == "document"),
                "{binding_name}/{name}: style"
            );
            for direction in ["input", "output"] {
                let body = only(only(operation, WSDL_NS, direction), soap, "body");
                assert_eq!(
                    body.attribute("use"),
                    Some("literal"),
                    "{binding_name}/{name} {direction}: use"
                );
            }
        }
        // The binding is offered at an address of the same SOAP version.
        let ports: Vec<&Declaration> = service
            .children_named(WSDL_NS, "port")
            .filter(|port| qname(port, "binding") == (TARGET_NAMESPACE, binding_name))
            .collect();
        assert_eq!(ports.len(), 1, "one port for binding {binding_name}");
        only(ports[0], soap, "address")
            .required("location")
            .unwrap_or_else(|error| panic!("{error}"));
    }
}

#[test]
fn fixture_folders_are_the_operations() {
    let mut operations = OPERATION_NAMES.map(str::to_owned).to_vec();
    operations.sort();
    assert_eq!(
        operation_folders(),
        operations,
        "fixtures/soap/ should hold one folder per operation (besides _setup)"
    );
}

/// The response documents under `fixtures/soap/*/`, sorted.
fn golden_responses() -> Vec<std::path::PathBuf> {
    let mut goldens = Vec::new();
    for folder in std::fs::read_dir(fixtures_dir().join("soap")).expect("fixtures/soap") {
        let folder = folder.expect("entry").path();
        if !folder.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&folder).expect("fixture folder") {
            let file = file.expect("entry").path();
            if file.to_string_lossy().ends_with(".response.xml") {
                goldens.push(file);
            }
        }
    }
    goldens.sort();
    goldens
}

#[test]
fn every_golden_response_is_valid_against_the_wsdl() {
    let goldens = golden_responses();
    assert!(!goldens.is_empty(), "no golden responses found");
    let mut failures = Vec::new();
    for golden in &goldens {
        let label = golden
            .strip_prefix(fixtures_dir())
            .unwrap_or(golden)
            .display()
            .to_string();
        let text = std::fs::read_to_string(golden).expect("readable golden");
        let Some((body, _trailer)) = text.trim_end().rsplit_once("\n<!-- HTTP ") else {
            failures.push(format!("{label}: no `<!-- HTTP … -->` trailer"));
            continue;
        };
        if let Err(error) = validate_response(body) {
            failures.push(format!("{label}: {error}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden responses are not valid against the WSDL:\n{}",
        failures.len(),
        goldens.len(),
        failures.join("\n")
    );
}

/// Sets the `location` of every soap/soap12 `address` in `node` to `location`; returns how many.
fn set_addresses(node: &mut Node, location: &str) -> usize {
    let mut count = 0;
    if node.name == "address" && [WSDL_SOAP11_NS, WSDL_SOAP12_NS].contains(&node.namespace.as_str())
    {
        for attribute in &mut node.attributes {
            if attribute.0.is_empty() && attribute.1 == "location" {
                attribute.2 = location.to_owned();
                count += 1;
            }
        }
    }
    for child in &mut node.children {
        count += set_addresses(child, location);
    }
    count
}

fn is_xml_media_type(content_type: &str) -> bool {
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media_type == "text/xml" || media_type == "application/xml" || media_type.ends_with("+xml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_wsdl_is_the_bundled_one_pointing_at_this_server() {
    let database = TestDatabase::with_test_shop();
    let server = TestServer::start(&database.path).await;
    let http = client();
    let base = server.base.clone();
    let cases = [
        (
            format!("{base}/soap/refunds?wsdl"),
            format!("{base}/soap/refunds"),
        ),
        (
            format!("{base}/api/?gate=refunds/getRefundStatus/1/soap/wsdl"),
            format!("{base}/api/?gate=refunds/getRefundStatus/1/soap"),
        ),
    ];
    for (url, location) in cases {
        let answer = get(&http, &url).await;
        assert_eq!(answer.status, 200, "GET {url}: {answer:?}");
        assert!(
            is_xml_media_type(&answer.content_type),
            "GET {url}: Content-Type {:?} is not XML",
            answer.content_type
        );
        assert!(
            !answer.body.contains(PLACEHOLDER_ADDRESS),
            "GET {url}: the placeholder address is still there"
        );
        let mut expected = canonical::parse(WSDL).expect("bundled WSDL");
        assert_eq!(
            set_addresses(&mut expected, &location),
            2,
            "the bundled WSDL should have a soap:address and a soap12:address"
        );
        let served = canonical::parse(&answer.body)
            .unwrap_or_else(|error| panic!("GET {url}: the WSDL is not XML: {error}"));
        assert!(
            served == expected,
            "GET {url}: not the bundled WSDL with both addresses at {location}:\n{}",
            answer.body
        );
    }
    server.stop().await;
}

/// A minimal call of `operation`: the wrapper element and nothing in it, no `authenticate`.
fn bare_call(envelope_namespace: &str, operation: &str) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><e:Envelope xmlns:e="{envelope_namespace}"><e:Body><r:{operation} xmlns:r="{TARGET_NAMESPACE}"/></e:Body></e:Envelope>"#
    )
    .into_bytes()
}

fn soap12_headers(operation: &str) -> Vec<(String, String)> {
    vec![(
        "content-type".to_owned(),
        format!("application/soap+xml; charset=utf-8; action=\"{TARGET_NAMESPACE}#{operation}\""),
    )]
}

/// The Body child of a response document.
fn body_child_of(xml: &str) -> Result<Node, String> {
    let document = canonical::parse(xml)?;
    let (_, child) = schema::body_child(&document)?;
    Ok(child.clone())
}

fn child_text<'n>(node: &'n Node, path: &[&str]) -> Option<&'n str> {
    let mut node = node;
    for name in path {
        node = node.children.iter().find(|child| child.name == *name)?;
    }
    Some(node.text.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_wsdl_operation_is_dispatched() {
    let database = TestDatabase::with_test_shop();
    let server = TestServer::start(&database.path).await;
    let http = client();
    let url = format!("{}/soap/refunds", server.base);
    let operations = wsdl_operation_names();
    assert!(!operations.is_empty());
    let mut failures = Vec::new();
    for operation in &operations {
        let versions = [
            (
                "SOAP 1.1",
                SOAP11_ENVELOPE_NS,
                soap11_headers(operation),
                "text/xml",
            ),
            (
                "SOAP 1.2",
                SOAP12_ENVELOPE_NS,
                soap12_headers(operation),
                "application/soap+xml",
            ),
        ];
        for (version, envelope_namespace, headers, media_type) in versions {
            let label = format!("{operation} ({version})");
            let answer = post(
                &http,
                &url,
                &headers,
                bare_call(envelope_namespace, operation),
            )
            .await;
            if answer.status != 200 || !answer.content_type.starts_with(media_type) {
                failures.push(format!(
                    "{label}: HTTP {} {} (want 200 {media_type}): {}",
                    answer.status, answer.content_type, answer.body
                ));
                continue;
            }
            if let Err(error) = validate_response(&answer.body) {
                failures.push(format!("{label}: not valid against the WSDL: {error}"));
                continue;
            }
            let response = match body_child_of(&answer.body) {
                Ok(response) => response,
                Err(error) => {
                    failures.push(format!("{label}: {error}"));
                    continue;
                }
            };
            let expected = format!("{operation}Response");
            if response.namespace != TARGET_NAMESPACE || response.name != expected {
                failures.push(format!(
                    "{label}: answered with <{}>, not <{expected}>",
                    response.name
                ));
                continue;
            }
            let code = child_text(&response, &["errors", "faultCode"]);
            if code != Some("1") {
                failures.push(format!(
                    "{label}: faultCode {code:?}, want 1 (authentication failed): {}",
                    answer.body
                ));
            }
        }
    }
    server.stop().await;
    assert!(
        failures.is_empty(),
        "operations not dispatched as the WSDL promises:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_operation_is_answered_with_a_soap_fault() {
    let database = TestDatabase::with_test_shop();
    let server = TestServer::start(&database.path).await;
    let http = client();
    let url = format!("{}/soap/refunds", server.base);
    let operation = "noSuchOperation";
    assert!(!OPERATION_NAMES.contains(&operation));

    let answer = post(
        &http,
        &url,
        &soap11_headers(operation),
        bare_call(SOAP11_ENVELOPE_NS, operation),
    )
    .await;
    assert_eq!(
        answer.status, 500,
        "SOAP 1.1 faults are HTTP 500: {answer:?}"
    );
    assert!(answer.content_type.starts_with("text/xml"), "{answer:?}");
    validate_response(&answer.body).unwrap_or_else(|error| panic!("{error}\n{}", answer.body));
    let fault = body_child_of(&answer.body).expect("a Body child");
    assert_eq!(
        (fault.namespace.as_str(), fault.name.as_str()),
        (SOAP11_ENVELOPE_NS, "Fault")
    );
    let code = child_text(&fault, &["faultcode"]).expect("faultcode");
    assert!(code.ends_with(":Client"), "faultcode {code:?}");

    let answer = post(
        &http,
        &url,
        &soap12_headers(operation),
        bare_call(SOAP12_ENVELOPE_NS, operation),
    )
    .await;
    assert_eq!(
        answer.status, 400,
        "SOAP 1.2 Sender faults are HTTP 400: {answer:?}"
    );
    assert!(
        answer.content_type.starts_with("application/soap+xml"),
        "{answer:?}"
    );
    validate_response(&answer.body).unwrap_or_else(|error| panic!("{error}\n{}", answer.body));
    let fault = body_child_of(&answer.body).expect("a Body child");
    assert_eq!(
        (fault.namespace.as_str(), fault.name.as_str()),
        (SOAP12_ENVELOPE_NS, "Fault")
    );
    let code = child_text(&fault, &["Code", "Value"]).expect("Code/Value");
    assert!(code.ends_with(":Sender"), "Code/Value {code:?}");

    server.stop().await;
}

#[tokio::test]
async fn public_url_sets_the_wsdl_address() {
    let database = TestDatabase::with_test_shop();
    let mut config = crate::support::test_config(&database.path);
    config.public_url = Some("https://shop.example/refunds-gateway/".to_owned());
    let server = TestServer::start_with(config).await;
    let wsdl = get(&client(), &format!("{}/soap/refunds?WSDL", server.base)).await;
    assert_eq!(wsdl.status, 200);
    assert_eq!(
        wsdl.body
            .matches(r#"location="https://shop.example/refunds-gateway/soap/refunds""#)
            .count(),
        2,
        "both ports point at the public URL"
    );
    server.stop().await;
}
