//! The SOAP envelope: the only file that knows the SOAP namespaces.
//!
//! [`parse`] is one streaming pass of quick-xml over the request. It finds the SOAP version
//! from the envelope's namespace, refuses any DOCTYPE (so no entity can be declared, let alone
//! expanded), enforces the limits on depth, element count, attribute and text size as it goes,
//! and builds a small tree of the Body's one child, the operation element, by local names: any
//! prefixes, default namespaces, unqualified children and `xsi:type` annotations bind alike.

use std::borrow::Cow;

use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{NamespaceError, ResolveResult};

use super::fault::{Fault, FaultCode};
use crate::operations::{Params, Scalar};

pub const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoapVersion {
    V11,
    V12,
}

impl SoapVersion {
    pub fn namespace(self) -> &'static str {
        match self {
            SoapVersion::V11 => SOAP11_NS,
            SoapVersion::V12 => SOAP12_NS,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            SoapVersion::V11 => "text/xml; charset=utf-8",
            SoapVersion::V12 => "application/soap+xml; charset=utf-8",
        }
    }

    /// The version a request's Content-Type suggests, for faults about bodies too broken to say.
    pub fn from_content_type(content_type: Option<&str>) -> SoapVersion {
        const SOAP12: &str = "application/soap+xml";
        // Compared in place: every SOAP request asks, so no lowercased copy.
        match content_type {
            Some(value)
                if value
                    .trim_start()
                    .as_bytes()
                    .get(..SOAP12.len())
                    .is_some_and(|start| start.eq_ignore_ascii_case(SOAP12.as_bytes())) =>
            {
                SoapVersion::V12
            }
            _ => SoapVersion::V11,
        }
    }
}

/// Bounds on what a request may make the parser hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XmlLimits {
    pub max_depth: usize,
    pub max_elements: usize,
    pub max_attributes_per_element: usize,
    pub max_attribute_bytes: usize,
    pub max_text_bytes: usize,
    pub max_namespace_bindings: usize,
}

impl Default for XmlLimits {
    fn default() -> XmlLimits {
        XmlLimits {
            max_depth: 32,
            max_elements: 10_000,
            max_attributes_per_element: 32,
            max_attribute_bytes: 4 * 1024,
            max_text_bytes: 64 * 1024,
            max_namespace_bindings: 256,
        }
    }
}

/// An element of the operation's tree: local name, text, children. Attributes other than
/// `xsi:nil` carry nothing we bind, so they are not kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
    pub nil: bool,
    /// `xsi:type="…:Map"`: PHP's encoding of an associative array (`item{key, value}`).
    pub map: bool,
}

impl Element {
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|child| child.name == name)
    }
}

impl Params for Element {
    fn scalar(&self, name: &str) -> Result<Option<Scalar<'_>>, &'static str> {
        match self.child(name) {
            None => Ok(None),
            Some(child) if child.nil => Ok(None),
            Some(child) if !child.children.is_empty() => Err("an element with child elements"),
            Some(child) => Ok(Some(Scalar::Text(Cow::Borrowed(child.text.as_str())))),
        }
    }

    fn nested(&self, name: &str) -> Result<Option<&Element>, &'static str> {
        Ok(self.child(name).filter(|child| !child.nil))
    }
}

/// A parsed request envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub version: SoapVersion,
    /// The Body's child: its local name is the operation.
    pub operation: Element,
    /// Header blocks, by local name, that ask to be understood (`mustUnderstand`) and are not.
    pub must_understand: Vec<String>,
    /// The `idempotencyKey` header block, if sent.
    pub idempotency_key: Option<String>,
}

/// The one header block this service understands.
const IDEMPOTENCY_HEADER: &str = "idempotencyKey";
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Where the parser is in the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Prolog,
    InEnvelope,
    InHeader,
    InBody,
    AfterEnvelope,
}

/// Parses a request body into an [`Envelope`], or the fault that answers it.
pub fn parse(
    body: &[u8],
    limits: &XmlLimits,
    content_type: Option<&str>,
) -> Result<Envelope, Fault> {
    let guess = SoapVersion::from_content_type(content_type);
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if body.starts_with(b"\xFF\xFE") || body.starts_with(b"\xFE\xFF") {
        return Err(Fault::client(guess, "the request is UTF-16; send UTF-8"));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| Fault::client(guess, "the request body is not valid UTF-8"))?;
    let mut parser = Parser::new(text, limits, guess);
    parser.run()
}

struct Parser<'i, 'l> {
    reader: NsReader<&'i [u8]>,
    limits: &'l XmlLimits,
    version: SoapVersion,
    known_version: bool,
    place: Place,
    depth: usize,
    elements: usize,
    seen_header: bool,
    seen_body: bool,
    /// The operation tree under construction: a stack of open elements.
    open: Vec<Element>,
    operation: Option<Element>,
    must_understand: Vec<String>,
    /// Text of the `idempotencyKey` header block, while inside it and after.
    idempotency_key: Option<String>,
    in_idempotency_key: bool,
}

impl<'i, 'l> Parser<'i, 'l> {
    fn new(text: &'i str, limits: &'l XmlLimits, guess: SoapVersion) -> Parser<'i, 'l> {
        let mut reader = NsReader::from_str(text);
        reader
            .resolver_mut()
            .set_max_namespace_bindings(limits.max_namespace_bindings);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.trim_text(false);
        Parser {
            reader,
            limits,
            version: guess,
            known_version: false,
            place: Place::Prolog,
            depth: 0,
            elements: 0,
            seen_header: false,
            seen_body: false,
            open: Vec::new(),
            operation: None,
            must_understand: Vec::new(),
            idempotency_key: None,
            in_idempotency_key: false,
        }
    }

    fn client(&self, reason: impl Into<String>) -> Fault {
        Fault::client(self.version, reason)
    }

    fn run(&mut self) -> Result<Envelope, Fault> {
        loop {
            let (namespace, event) = match self.reader.read_resolved_event() {
                Ok((ResolveResult::Unknown(prefix), Event::Start(_) | Event::Empty(_))) => {
                    let prefix: String = prefix.chars().take(32).collect();
                    return Err(self.client(format!("undeclared namespace prefix '{prefix}'")));
                }
                // Only the Envelope, Header and Body are judged by namespace; the payload binds by
                // local name, so its namespaces are never copied.
                Ok((namespace, event)) if self.depth < 2 => (namespace_of(&namespace), event),
                Ok((_, event)) => (None, event),
                Err(
                    error @ quick_xml::Error::Namespace(NamespaceError::TooManyBindings(limit)),
                ) => {
                    // The parser's own text advises raising its limit: words for us (the log),
                    // not for clients.
                    tracing::info!(%error, "a request declared too many namespaces");
                    return Err(self.client(format!(
                        "too many namespace declarations: at most {limit} may be in scope"
                    )));
                }
                Err(error) => {
                    let position = self.reader.error_position();
                    return Err(self.client(format!("malformed XML at byte {position}: {error}")));
                }
            };
            match event {
                Event::Decl(declaration) => {
                    if let Some(Ok(encoding)) = declaration.encoding()
                        && !encoding.eq_ignore_ascii_case("utf-8")
                    {
                        return Err(self.client(format!(
                            "the request declares encoding '{encoding}'; send UTF-8"
                        )));
                    }
                }
                Event::DocType(_) => {
                    return Err(
                        self.client("DOCTYPE declarations are not allowed in SOAP messages")
                    );
                }
                Event::PI(_) | Event::Comment(_) => {}
                Event::Start(start) => self.start(namespace, &start, false)?,
                Event::Empty(start) => self.start(namespace, &start, true)?,
                Event::End(_) => self.end()?,
                Event::Text(text) => self.text(&text.xml10_content())?,
                Event::CData(data) => self.text(&data.xml10_content())?,
                Event::GeneralRef(reference) => {
                    let character = match reference.resolve_char_ref() {
                        Ok(Some(character)) if is_xml_char(character) => character,
                        Ok(Some(_)) => {
                            return Err(self.client(
                                "a character reference to a character XML does not allow",
                            ));
                        }
                        Ok(None) => match &*reference.xml10_content() {
                            "amp" => '&',
                            "lt" => '<',
                            "gt" => '>',
                            "apos" => '\'',
                            "quot" => '"',
                            other => {
                                let name = other.chars().take(32).collect::<String>();
                                return Err(self.client(format!("undeclared entity '&{name};'")));
                            }
                        },
                        Err(_) => return Err(self.client("invalid character reference")),
                    };
                    self.text(character.encode_utf8(&mut [0; 4]))?;
                }
                Event::Eof => return self.finish(),
            }
        }
    }

    fn start(
        &mut self,
        namespace: Option<String>,
        start: &BytesStart<'_>,
        empty: bool,
    ) -> Result<(), Fault> {
        self.depth += 1;
        self.elements += 1;
        if self.depth > self.limits.max_depth {
            return Err(self.client(format!(
                "the message nests deeper than {} elements",
                self.limits.max_depth
            )));
        }
        if self.elements > self.limits.max_elements {
            return Err(self.client(format!(
                "the message has more than {} elements",
                self.limits.max_elements
            )));
        }
        let attributes = self.attributes(start)?;
        let local = start.local_name().as_ref().to_owned();
        match self.place {
            Place::Prolog => self.envelope(namespace.as_deref(), &local)?,
            Place::AfterEnvelope => return Err(self.client("content after the Envelope")),
            Place::InEnvelope if self.depth == 2 => {
                let in_envelope = namespace.as_deref() == Some(self.version.namespace());
                match local.as_str() {
                    "Header" if in_envelope && !self.seen_header && !self.seen_body => {
                        self.seen_header = true;
                        self.place = Place::InHeader;
                    }
                    "Body" if in_envelope && !self.seen_body => {
                        self.seen_body = true;
                        self.place = Place::InBody;
                    }
                    "Header" | "Body" if in_envelope => {
                        return Err(self.client(format!(
                            "the Envelope holds an optional Header and then one Body; '{local}' is out of place"
                        )));
                    }
                    _ => {
                        return Err(
                            self.client(format!("unexpected element '{local}' in the Envelope"))
                        );
                    }
                }
            }
            Place::InHeader => {
                if self.depth == 3 && local == IDEMPOTENCY_HEADER {
                    self.in_idempotency_key = true;
                    self.idempotency_key = Some(String::new());
                } else if self.depth == 3 && attributes.must_understand {
                    self.must_understand.push(local.clone());
                }
            }
            Place::InBody if self.depth == 3 => {
                if self.operation.is_some() {
                    return Err(self.client("the Body must hold exactly one operation element"));
                }
                self.open.push(Element {
                    name: local,
                    nil: attributes.nil,
                    map: attributes.map,
                    ..Element::default()
                });
            }
            Place::InBody => {
                self.open.push(Element {
                    name: local,
                    nil: attributes.nil,
                    map: attributes.map,
                    ..Element::default()
                });
            }
            Place::InEnvelope => return Err(self.client("unexpected element in the Envelope")),
        }
        if empty {
            self.end()?;
        }
        Ok(())
    }

    fn envelope(&mut self, namespace: Option<&str>, local: &str) -> Result<(), Fault> {
        if local != "Envelope" {
            return Err(self.client(format!(
                "the root element is '{local}', not a SOAP Envelope"
            )));
        }
        self.version = match namespace {
            Some(SOAP11_NS) => SoapVersion::V11,
            Some(SOAP12_NS) => SoapVersion::V12,
            other => {
                return Err(Fault::new(
                    self.version,
                    FaultCode::VersionMismatch,
                    format!(
                        "the Envelope namespace '{}' is neither SOAP 1.1 nor SOAP 1.2",
                        other.unwrap_or("")
                    ),
                ));
            }
        };
        self.known_version = true;
        self.place = Place::InEnvelope;
        Ok(())
    }

    fn end(&mut self) -> Result<(), Fault> {
        match self.place {
            Place::InBody if !self.open.is_empty() => {
                let finished = self.open.pop().unwrap_or_default();
                match self.open.last_mut() {
                    Some(parent) => parent.children.push(finished),
                    None => self.operation = Some(unmap_operation(finished)),
                }
            }
            Place::InHeader if self.depth == 3 => self.in_idempotency_key = false,
            Place::InBody | Place::InHeader if self.depth == 2 => self.place = Place::InEnvelope,
            Place::InEnvelope if self.depth == 1 => self.place = Place::AfterEnvelope,
            _ => {}
        }
        self.depth = self.depth.saturating_sub(1);
        Ok(())
    }

    fn text(&mut self, text: &str) -> Result<(), Fault> {
        let max = self.limits.max_text_bytes;
        if !text.chars().all(is_xml_char) {
            return Err(self.client("the message holds a character XML does not allow"));
        }
        if self.in_idempotency_key {
            let key = self.idempotency_key.get_or_insert_with(String::new);
            if key.len() + text.len() > MAX_IDEMPOTENCY_KEY {
                return Err(Fault::client(
                    self.version,
                    format!("idempotencyKey is longer than {MAX_IDEMPOTENCY_KEY} bytes"),
                ));
            }
            key.push_str(text);
            return Ok(());
        }
        match self.open.last_mut() {
            Some(element) => {
                if element.text.len() + text.len() > max {
                    return Err(Fault::client(
                        self.version,
                        format!("a text value is longer than {max} bytes"),
                    ));
                }
                element.text.push_str(text);
                Ok(())
            }
            None if text.len() > max => Err(Fault::client(
                self.version,
                format!("a text value is longer than {max} bytes"),
            )),
            // Header blocks may carry anything; elsewhere outside the operation only
            // whitespace may stand between elements.
            None if self.place == Place::InHeader || text.trim().is_empty() => Ok(()),
            None => Err(self.client(match self.place {
                Place::Prolog => "the request is not a SOAP Envelope: it starts with text",
                Place::AfterEnvelope => "content after the Envelope",
                _ => "text outside the operation element",
            })),
        }
    }

    fn attributes(&self, start: &BytesStart<'_>) -> Result<Attributes, Fault> {
        let mut found = Attributes::default();
        for (index, attribute) in start.attributes().with_checks(true).enumerate() {
            if index >= self.limits.max_attributes_per_element {
                return Err(self.client(format!(
                    "an element has more than {} attributes",
                    self.limits.max_attributes_per_element
                )));
            }
            let attribute =
                attribute.map_err(|error| self.client(format!("malformed attribute: {error}")))?;
            if attribute.value.len() > self.limits.max_attribute_bytes {
                return Err(self.client(format!(
                    "an attribute value is longer than {} bytes",
                    self.limits.max_attribute_bytes
                )));
            }
            let (namespace, local) = self.reader.resolver().resolve_attribute(attribute.key);
            let in_namespace = |uri: &str| matches!(&namespace, ResolveResult::Bound(bound) if bound.as_ref() == uri);
            let flag = || matches!(attribute.value.trim(), "true" | "1");
            match local.as_ref() {
                "nil" if in_namespace(XSI_NS) => found.nil = flag(),
                "type" if in_namespace(XSI_NS) => {
                    found.map = attribute.value.trim().rsplit(':').next() == Some("Map");
                }
                "mustUnderstand" if in_namespace(self.version.namespace()) => {
                    found.must_understand = flag();
                }
                _ => {}
            }
        }
        Ok(found)
    }

    fn finish(&mut self) -> Result<Envelope, Fault> {
        if !self.known_version {
            return Err(self.client("the request is empty or holds no SOAP Envelope"));
        }
        if self.place != Place::AfterEnvelope {
            return Err(self.client("the message ends before the Envelope is closed"));
        }
        let operation = self
            .operation
            .take()
            .ok_or_else(|| self.client("the Body holds no operation element"))?;
        Ok(Envelope {
            version: self.version,
            operation,
            must_understand: std::mem::take(&mut self.must_understand),
            idempotency_key: self
                .idempotency_key
                .take()
                .map(|key| key.trim().to_owned())
                .filter(|key| !key.is_empty()),
        })
    }
}

#[derive(Debug, Default)]
struct Attributes {
    nil: bool,
    must_understand: bool,
    map: bool,
}

/// Turns PHP's Map encoding into named elements: an element typed `Map` holds
/// `item{key, value}` pairs, each standing for a field named by `key` with `value`'s content.
fn unmap(mut element: Element) -> Element {
    if element.map {
        element.children = std::mem::take(&mut element.children)
            .into_iter()
            .filter(|item| item.name == "item")
            .filter_map(|mut item| {
                let key = item.child("key")?.text.trim().to_owned();
                let position = item
                    .children
                    .iter()
                    .position(|child| child.name == "value")?;
                let mut value = item.children.swap_remove(position);
                value.name = key;
                Some(value)
            })
            .collect();
        element.map = false;
    }
    element.children = element.children.into_iter().map(unmap).collect();
    element
}

/// A PHP non-WSDL call (`__soapCall('op', [[...]])`) sends the wrapper's fields as one Map part
/// (`param0`): its fields become the operation's own.
fn unmap_operation(operation: Element) -> Element {
    let mut operation = unmap(operation);
    let single_map_part = operation.children.len() == 1
        && operation.child("params").is_none()
        && operation.child("authenticate").is_none()
        && operation.children[0].child("params").is_some();
    if single_map_part {
        let part = operation.children.remove(0);
        operation.children = part.children;
    }
    operation
}

/// XML 1.0's `Char` production.
fn is_xml_char(character: char) -> bool {
    matches!(character, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn namespace_of(result: &ResolveResult<'_>) -> Option<String> {
    match result {
        ResolveResult::Bound(namespace) => Some(namespace.as_ref().to_owned()),
        _ => None,
    }
}
