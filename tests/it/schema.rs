//! Validating responses against the XML Schema inside our own WSDL, with no external tool.
//!
//! Only the subset `wsdl/refunds.wsdl` uses is understood: named `xs:complexType`s holding one
//! `xs:sequence` of `xs:element name= type= minOccurs= maxOccurs=`, global elements with an
//! anonymous complexType/sequence, `elementFormDefault`, and the built-in simple types
//! xs:string, xs:long, xs:int, xs:decimal, xs:boolean (and xs:QName). Anything else in the
//! schema (attributes, choice, refs, restrictions, ...) is refused when the schema is read, so
//! the validator never passes a document by ignoring what it does not understand.
//!
//! SOAP Faults are not described by our schema; their shapes (1.1 and 1.2) are built here in the
//! same model, so one sequence matcher checks both.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{QName, ResolveResult};

use crate::canonical::{self, Node};

pub const WSDL_NS: &str = "http://schemas.xmlsoap.org/wsdl/";
pub const XS_NS: &str = "http://www.w3.org/2001/XMLSchema";
pub const SOAP11_ENVELOPE_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const SOAP12_ENVELOPE_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

// ---------------------------------------------------------------------------------------------
// Reading the WSDL's declarations.

/// An element of a contract document (the WSDL) as read for its declarations. Text is dropped;
/// every unqualified attribute whose value is a QName is also kept resolved in the element's
/// scope (`type="tns:errors"`, `message="tns:…"`), which `canonical::parse` cannot do because it
/// drops the namespace declarations.
#[derive(Debug, Clone)]
pub struct Declaration {
    pub namespace: String,
    pub name: String,
    attributes: BTreeMap<String, String>,
    resolved: BTreeMap<String, (String, String)>,
    pub children: Vec<Declaration>,
}

impl Declaration {
    pub fn is(&self, namespace: &str, name: &str) -> bool {
        self.namespace == namespace && self.name == name
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }

    pub fn required(&self, name: &str) -> Result<&str, String> {
        self.attribute(name)
            .ok_or_else(|| format!("<{}> has no `{name}` attribute", self.name))
    }

    /// The attribute `name` read as a QName: `(namespace, local name)`.
    pub fn qname(&self, name: &str) -> Result<(&str, &str), String> {
        let value = self.required(name)?;
        self.resolved
            .get(name)
            .map(|(namespace, local)| (namespace.as_str(), local.as_str()))
            .ok_or_else(|| {
                format!(
                    "<{} {name}=\"{value}\">: not a QName with a bound prefix",
                    self.name
                )
            })
    }

    pub fn children_named<'d>(
        &'d self,
        namespace: &'d str,
        name: &'d str,
    ) -> impl Iterator<Item = &'d Declaration> + 'd {
        self.children
            .iter()
            .filter(move |child| child.is(namespace, name))
    }

    /// The one child `{namespace}name`; an error when there is none or more than one.
    pub fn only_child(&self, namespace: &str, name: &str) -> Result<&Declaration, String> {
        let mut found = self
            .children
            .iter()
            .filter(|child| child.is(namespace, name));
        match (found.next(), found.next()) {
            (Some(child), None) => Ok(child),
            (None, _) => Err(format!("<{}> has no <{name}> child", self.name)),
            (Some(_), Some(_)) => Err(format!("<{}> has more than one <{name}> child", self.name)),
        }
    }
}

/// Parses a contract document into its declaration tree.
pub fn read_declarations(xml: &str) -> Result<Declaration, String> {
    let xml = xml.strip_prefix('\u{feff}').unwrap_or(xml);
    let mut reader = NsReader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Declaration> = Vec::new();
    let mut root: Option<Declaration> = None;
    loop {
        let (namespace, event) = match reader.read_resolved_event() {
            Ok((ResolveResult::Bound(namespace), event)) => (namespace.as_ref().to_owned(), event),
            Ok((_, event)) => (String::new(), event),
            Err(error) => {
                return Err(format!(
                    "malformed XML at byte {}: {error}",
                    reader.error_position()
                ));
            }
        };
        match event {
            Event::Start(start) => stack.push(declaration_of(&reader, namespace, &start)?),
            Event::Empty(start) => {
                let declaration = declaration_of(&reader, namespace, &start)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(declaration),
                    None => root = Some(declaration),
                }
            }
            Event::End(_) => {
                let declaration = stack.pop().ok_or("an end tag without a start")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(declaration),
                    None => root = Some(declaration),
                }
            }
            Event::DocType(_) => return Err("a DOCTYPE".to_owned()),
            Event::Eof => break,
            _ => {}
        }
    }
    root.ok_or_else(|| "no root element".to_owned())
}

fn declaration_of(
    reader: &NsReader<&[u8]>,
    namespace: String,
    start: &BytesStart<'_>,
) -> Result<Declaration, String> {
    let mut attributes = BTreeMap::new();
    let mut resolved = BTreeMap::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|error| error.to_string())?;
        let key = attribute.key.as_ref();
        // Namespace declarations and namespace-qualified (extension) attributes declare nothing
        // this module reads.
        if key.contains(':') || key == "xmlns" {
            continue;
        }
        let value = attribute
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|error| error.to_string())?
            .trim()
            .to_owned();
        if !value.is_empty() && !value.contains(char::is_whitespace) {
            let (value_namespace, local) = reader.resolver().resolve_element(QName(&value));
            let value_namespace = match value_namespace {
                ResolveResult::Bound(bound) => Some(bound.as_ref().to_owned()),
                ResolveResult::Unbound => Some(String::new()),
                ResolveResult::Unknown(_) => None,
            };
            if let Some(value_namespace) = value_namespace {
                resolved.insert(key.to_owned(), (value_namespace, local.as_ref().to_owned()));
            }
        }
        attributes.insert(key.to_owned(), value);
    }
    Ok(Declaration {
        namespace,
        name: start.local_name().as_ref().to_owned(),
        attributes,
        resolved,
        children: Vec::new(),
    })
}

// ---------------------------------------------------------------------------------------------
// The schema model.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    String,
    Long,
    Int,
    Decimal,
    Boolean,
    QName,
}

impl Builtin {
    fn named(local: &str) -> Option<Builtin> {
        Some(match local {
            "string" => Builtin::String,
            "long" => Builtin::Long,
            "int" => Builtin::Int,
            "decimal" => Builtin::Decimal,
            "boolean" => Builtin::Boolean,
            "QName" => Builtin::QName,
            _ => return None,
        })
    }

    fn xs_name(self) -> &'static str {
        match self {
            Builtin::String => "xs:string",
            Builtin::Long => "xs:long",
            Builtin::Int => "xs:int",
            Builtin::Decimal => "xs:decimal",
            Builtin::Boolean => "xs:boolean",
            Builtin::QName => "xs:QName",
        }
    }

    /// Checks the lexical form of `text`. Every type but xs:string collapses whitespace, so
    /// surrounding whitespace is allowed there.
    fn check(self, text: &str) -> Result<(), String> {
        let collapsed = text.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
        let valid = match self {
            Builtin::String => true,
            Builtin::Long => is_integer(collapsed) && collapsed.parse::<i64>().is_ok(),
            Builtin::Int => is_integer(collapsed) && collapsed.parse::<i32>().is_ok(),
            Builtin::Decimal => is_plain_decimal(collapsed),
            Builtin::Boolean => matches!(collapsed, "true" | "false" | "1" | "0"),
            Builtin::QName => is_qname(collapsed),
        };
        if valid {
            Ok(())
        } else {
            Err(format!("{text:?} is not a valid {}", self.xs_name()))
        }
    }
}

/// An optional sign and at least one digit (the range is checked by parsing).
fn is_integer(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `-?\d+(\.\d+)?`: what the gateway promises to send. Stricter than xs:decimal on purpose
/// (which also takes `+1`, `.5` and `5.`); never an exponent, which xs:decimal does not allow.
fn is_plain_decimal(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && fraction.is_none_or(digits)
}

fn is_qname(text: &str) -> bool {
    let ncname = |part: &str| {
        let mut characters = part.chars();
        characters
            .next()
            .is_some_and(|first| first.is_alphabetic() || first == '_')
            && characters.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    match text.split_once(':') {
        Some((prefix, local)) => ncname(prefix) && ncname(local),
        None => ncname(text),
    }
}

#[derive(Debug, Clone)]
enum TypeRef {
    Simple(Builtin),
    /// A named complexType of the schema.
    Named(String),
    Anonymous(Vec<Particle>),
    /// Any attributes and content (the SOAP Fault's `detail`); never read from a WSDL.
    Any,
}

/// One `xs:element` of a sequence.
#[derive(Debug, Clone)]
struct Particle {
    name: String,
    type_ref: TypeRef,
    min_occurs: u32,
    /// `None` is `unbounded`.
    max_occurs: Option<u32>,
    /// Attributes the element must carry, as `(namespace, name)`. Our WSDL declares none; the
    /// SOAP 1.2 fault's `Text` needs `xml:lang`.
    required_attributes: Vec<(String, String)>,
}

impl Particle {
    fn new(name: &str, type_ref: TypeRef, min_occurs: u32, max_occurs: Option<u32>) -> Particle {
        Particle {
            name: name.to_owned(),
            type_ref,
            min_occurs,
            max_occurs,
            required_attributes: Vec::new(),
        }
    }
}

/// The schema of a WSDL: its target namespace, named complexTypes and global elements.
#[derive(Debug, Clone)]
pub struct Schema {
    pub target_namespace: String,
    /// `elementFormDefault="qualified"`: local elements are in the target namespace.
    pub qualified: bool,
    complex_types: BTreeMap<String, Vec<Particle>>,
    elements: BTreeMap<String, TypeRef>,
}

/// The schema of the bundled WSDL, read once.
pub fn bundled_schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        Schema::from_wsdl(refunds_gateway::soap::wsdl::WSDL)
            .unwrap_or_else(|error| panic!("the bundled WSDL's schema: {error}"))
    })
}

impl Schema {
    /// Reads the one `xs:schema` inside a WSDL's `wsdl:types`.
    pub fn from_wsdl(wsdl: &str) -> Result<Schema, String> {
        let definitions = read_declarations(wsdl)?;
        if !definitions.is(WSDL_NS, "definitions") {
            return Err(format!(
                "the root is <{}>, not wsdl:definitions",
                definitions.name
            ));
        }
        let schema = definitions
            .only_child(WSDL_NS, "types")?
            .only_child(XS_NS, "schema")?;
        Schema::from_declaration(schema)
    }

    /// Reads a standalone `xs:schema` document.
    pub fn from_xsd(xsd: &str) -> Result<Schema, String> {
        let schema = read_declarations(xsd)?;
        if !schema.is(XS_NS, "schema") {
            return Err(format!("the root is <{}>, not xs:schema", schema.name));
        }
        Schema::from_declaration(&schema)
    }

    fn from_declaration(schema: &Declaration) -> Result<Schema, String> {
        allow_attributes(
            schema,
            &[
                "targetNamespace",
                "elementFormDefault",
                "attributeFormDefault",
            ],
        )?;
        let target_namespace = schema.required("targetNamespace")?.to_owned();
        let qualified = match schema.attribute("elementFormDefault") {
            Some("qualified") => true,
            None | Some("unqualified") => false,
            Some(other) => return Err(format!("elementFormDefault=\"{other}\"")),
        };
        let mut complex_types = BTreeMap::new();
        let mut elements = BTreeMap::new();
        for child in &schema.children {
            if child.namespace != XS_NS {
                return Err(format!("unsupported schema child <{}>", child.name));
            }
            match child.name.as_str() {
                "annotation" => {}
                "complexType" => {
                    allow_attributes(child, &["name"])?;
                    let name = child.required("name")?.to_owned();
                    let sequence = sequence_of(child, &target_namespace)?;
                    if complex_types.insert(name.clone(), sequence).is_some() {
                        return Err(format!("complexType `{name}` is declared twice"));
                    }
                }
                "element" => {
                    allow_attributes(child, &["name", "type"])?;
                    let name = child.required("name")?.to_owned();
                    let type_ref = element_type(child, &target_namespace)?;
                    if elements.insert(name.clone(), type_ref).is_some() {
                        return Err(format!("global element `{name}` is declared twice"));
                    }
                }
                other => return Err(format!("unsupported schema construct xs:{other}")),
            }
        }
        let schema = Schema {
            target_namespace,
            qualified,
            complex_types,
            elements,
        };
        schema.check_references()?;
        Ok(schema)
    }

    /// Every named type an element refers to is declared.
    fn check_references(&self) -> Result<(), String> {
        fn walk(schema: &Schema, type_ref: &TypeRef, context: &str) -> Result<(), String> {
            match type_ref {
                TypeRef::Named(name) if !schema.complex_types.contains_key(name) => Err(format!(
                    "{context} refers to complexType `{name}`, which is not declared"
                )),
                TypeRef::Anonymous(particles) => particles
                    .iter()
                    .try_for_each(|particle| walk(schema, &particle.type_ref, context)),
                _ => Ok(()),
            }
        }
        for (name, particles) in &self.complex_types {
            for particle in particles {
                walk(self, &particle.type_ref, &format!("complexType `{name}`"))?;
            }
        }
        for (name, type_ref) in &self.elements {
            walk(self, type_ref, &format!("element `{name}`"))?;
        }
        Ok(())
    }

    pub fn global_element_names(&self) -> BTreeSet<&str> {
        self.elements.keys().map(String::as_str).collect()
    }

    /// The namespace of local elements.
    fn local_namespace(&self) -> &str {
        if self.qualified {
            &self.target_namespace
        } else {
            ""
        }
    }

    /// Validates `element` against the global element declaration of its name.
    pub fn validate_global(&self, element: &Node) -> Result<(), String> {
        let path = format!("/{}", element.name);
        let type_ref = self.elements.get(&element.name).ok_or_else(|| {
            format!(
                "{path}: the schema of {} declares no global element of that name",
                self.target_namespace
            )
        })?;
        if element.namespace != self.target_namespace {
            return Err(format!(
                "{path}: in namespace {:?}, the schema declares it in {:?}",
                element.namespace, self.target_namespace
            ));
        }
        self.check_attributes(&[], element, &path)?;
        self.check_content(type_ref, element, &path)
    }

    fn check_attributes(
        &self,
        required: &[(String, String)],
        element: &Node,
        path: &str,
    ) -> Result<(), String> {
        for (namespace, name, _) in &element.attributes {
            if !required
                .iter()
                .any(|(want_namespace, want_name)| want_namespace == namespace && want_name == name)
            {
                return Err(format!(
                    "{path}: attribute {} is not declared",
                    describe(namespace, name)
                ));
            }
        }
        for (namespace, name) in required {
            if !element
                .attributes
                .iter()
                .any(|(has_namespace, has_name, _)| has_namespace == namespace && has_name == name)
            {
                return Err(format!(
                    "{path}: the required attribute {} is missing",
                    describe(namespace, name)
                ));
            }
        }
        Ok(())
    }

    fn check_content(&self, type_ref: &TypeRef, element: &Node, path: &str) -> Result<(), String> {
        match type_ref {
            TypeRef::Any => Ok(()),
            TypeRef::Simple(builtin) => {
                if let Some(child) = element.children.first() {
                    return Err(format!(
                        "{path}: an element of simple type {} holds the element <{}>",
                        builtin.xs_name(),
                        child.name
                    ));
                }
                builtin
                    .check(&element.text)
                    .map_err(|error| format!("{path}: {error}"))
            }
            TypeRef::Named(name) => match self.complex_types.get(name) {
                Some(particles) => self.check_sequence(particles, element, path),
                None => Err(format!("{path}: complexType `{name}` is not declared")),
            },
            TypeRef::Anonymous(particles) => self.check_sequence(particles, element, path),
        }
    }

    /// Matches the children against the sequence in order, each particle taking as many
    /// consecutive children as its maxOccurs allows; anything left over is an error.
    fn check_sequence(
        &self,
        particles: &[Particle],
        element: &Node,
        path: &str,
    ) -> Result<(), String> {
        if !element.text.trim().is_empty() {
            return Err(format!(
                "{path}: text {:?} in an element of complex type (element-only content)",
                element.text.trim()
            ));
        }
        let children = &element.children;
        let mut next = 0;
        for particle in particles {
            let mut count = 0;
            while let Some(child) = children.get(next) {
                let room = particle.max_occurs.is_none_or(|max| count < max);
                if child.name != particle.name || !room {
                    break;
                }
                let child_path = format!("{path}/{}", child.name);
                if child.namespace != self.local_namespace() {
                    return Err(format!(
                        "{child_path}: in namespace {:?}, the schema wants {:?}",
                        child.namespace,
                        self.local_namespace()
                    ));
                }
                self.check_attributes(&particle.required_attributes, child, &child_path)?;
                self.check_content(&particle.type_ref, child, &child_path)?;
                count += 1;
                next += 1;
            }
            if count < particle.min_occurs {
                let found = match children.get(next) {
                    Some(child)
                        if repeats_previous(children, next) || !declares(particles, child) =>
                    {
                        return Err(misfit(particles, children, next, path));
                    }
                    Some(child) => format!("<{}>", child.name),
                    None => "the end of the element".to_owned(),
                };
                let later = children[next..]
                    .iter()
                    .any(|child| child.name == particle.name);
                let why = if later { "out of order" } else { "missing" };
                return Err(format!(
                    "{path}: required <{}> is {why} (minOccurs {}, found {found} instead); the sequence is {}",
                    particle.name,
                    particle.min_occurs,
                    sequence_names(particles)
                ));
            }
        }
        if next < children.len() {
            return Err(misfit(particles, children, next, path));
        }
        Ok(())
    }
}

fn declares(particles: &[Particle], child: &Node) -> bool {
    particles.iter().any(|particle| particle.name == child.name)
}

fn sequence_names(particles: &[Particle]) -> String {
    particles
        .iter()
        .map(|particle| particle.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why no particle took `children[next]`: its particle was already full, its particle came
/// earlier in the sequence, or the sequence has no such element.
fn misfit(particles: &[Particle], children: &[Node], next: usize, path: &str) -> String {
    let extra = &children[next];
    let particle = particles
        .iter()
        .find(|particle| particle.name == extra.name);
    match particle {
        Some(particle) if repeats_previous(children, next) => format!(
            "{path}: <{}> occurs more often than maxOccurs {}",
            extra.name,
            particle
                .max_occurs
                .map_or("unbounded".to_owned(), |max| max.to_string())
        ),
        Some(_) => format!(
            "{path}: <{}> is out of order; the sequence is {}",
            extra.name,
            sequence_names(particles)
        ),
        None => format!(
            "{path}: unexpected element {} not in the sequence {}",
            describe(&extra.namespace, &extra.name),
            sequence_names(particles)
        ),
    }
}

/// Whether the child at `next`, which no particle took, has the name of the child before it: the
/// particle that took that one is full.
fn repeats_previous(children: &[Node], next: usize) -> bool {
    next > 0 && next < children.len() && children[next - 1].name == children[next].name
}

fn describe(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("<{name}>")
    } else {
        format!("<{{{namespace}}}{name}>")
    }
}

fn allow_attributes(declaration: &Declaration, allowed: &[&str]) -> Result<(), String> {
    match declaration
        .attributes
        .keys()
        .find(|name| !allowed.contains(&name.as_str()))
    {
        Some(name) => Err(format!(
            "unsupported attribute `{name}` on xs:{}",
            declaration.name
        )),
        None => Ok(()),
    }
}

/// The particles of a complexType: its one `xs:sequence` (none means empty content).
fn sequence_of(
    complex_type: &Declaration,
    target_namespace: &str,
) -> Result<Vec<Particle>, String> {
    let mut sequence = None;
    for child in &complex_type.children {
        match (child.namespace.as_str(), child.name.as_str()) {
            (XS_NS, "annotation") => {}
            (XS_NS, "sequence") if sequence.is_none() => sequence = Some(child),
            _ => {
                return Err(format!(
                    "unsupported complexType content <{}> (only one xs:sequence)",
                    child.name
                ));
            }
        }
    }
    let Some(sequence) = sequence else {
        return Ok(Vec::new());
    };
    allow_attributes(sequence, &[])?;
    let mut particles: Vec<Particle> = Vec::new();
    for child in &sequence.children {
        if child.is(XS_NS, "annotation") {
            continue;
        }
        if !child.is(XS_NS, "element") {
            return Err(format!("unsupported sequence content <{}>", child.name));
        }
        allow_attributes(child, &["name", "type", "minOccurs", "maxOccurs"])?;
        let name = child.required("name")?;
        // The matcher is greedy; a name used twice could need backtracking.
        if particles.iter().any(|particle| particle.name == name) {
            return Err(format!("element `{name}` appears twice in one sequence"));
        }
        let min_occurs = match child.attribute("minOccurs") {
            None => 1,
            Some(text) => text
                .parse()
                .map_err(|_| format!("minOccurs=\"{text}\" on `{name}`"))?,
        };
        let max_occurs = match child.attribute("maxOccurs") {
            None => Some(1),
            Some("unbounded") => None,
            Some(text) => Some(
                text.parse()
                    .map_err(|_| format!("maxOccurs=\"{text}\" on `{name}`"))?,
            ),
        };
        if max_occurs.is_some_and(|max| max < min_occurs || max == 0) {
            return Err(format!(
                "`{name}`: minOccurs {min_occurs} and maxOccurs {max_occurs:?}"
            ));
        }
        let type_ref = element_type(child, target_namespace)?;
        particles.push(Particle::new(name, type_ref, min_occurs, max_occurs));
    }
    Ok(particles)
}

/// The type of an `xs:element`: its `type` QName, or its anonymous complexType.
fn element_type(element: &Declaration, target_namespace: &str) -> Result<TypeRef, String> {
    let name = element.required("name")?;
    let anonymous = element
        .children
        .iter()
        .filter(|child| !child.is(XS_NS, "annotation"))
        .collect::<Vec<_>>();
    match (element.attribute("type"), anonymous.as_slice()) {
        (Some(_), []) => {
            let (namespace, local) = element.qname("type")?;
            if namespace == XS_NS {
                Builtin::named(local)
                    .map(TypeRef::Simple)
                    .ok_or_else(|| format!("`{name}`: unsupported built-in type xs:{local}"))
            } else if namespace == target_namespace {
                Ok(TypeRef::Named(local.to_owned()))
            } else {
                Err(format!(
                    "`{name}`: type {{{namespace}}}{local} is in neither XML Schema nor the target namespace"
                ))
            }
        }
        (None, [complex_type]) if complex_type.is(XS_NS, "complexType") => {
            allow_attributes(complex_type, &[])?;
            Ok(TypeRef::Anonymous(sequence_of(
                complex_type,
                target_namespace,
            )?))
        }
        _ => Err(format!(
            "`{name}`: an element needs either a `type` or one anonymous xs:complexType"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// SOAP envelopes and faults.

/// The SOAP 1.1 Fault: unqualified `faultcode`, `faultstring`, optional `faultactor`, `detail`.
fn soap11_fault_schema() -> Schema {
    let fault = vec![
        Particle::new("faultcode", TypeRef::Simple(Builtin::QName), 1, Some(1)),
        Particle::new("faultstring", TypeRef::Simple(Builtin::String), 1, Some(1)),
        Particle::new("faultactor", TypeRef::Simple(Builtin::String), 0, Some(1)),
        Particle::new("detail", TypeRef::Any, 0, Some(1)),
    ];
    Schema {
        target_namespace: SOAP11_ENVELOPE_NS.to_owned(),
        qualified: false,
        complex_types: BTreeMap::new(),
        elements: BTreeMap::from([("Fault".to_owned(), TypeRef::Anonymous(fault))]),
    }
}

/// The SOAP 1.2 Fault: `Code/Value` (+ `Subcode`), `Reason/Text xml:lang` (one or more), then
/// optional `Node`, `Role`, `Detail`, all qualified.
fn soap12_fault_schema() -> Schema {
    let mut text = Particle::new("Text", TypeRef::Simple(Builtin::String), 1, None);
    text.required_attributes = vec![(XML_NS.to_owned(), "lang".to_owned())];
    let code = vec![
        Particle::new("Value", TypeRef::Simple(Builtin::QName), 1, Some(1)),
        Particle::new("Subcode", TypeRef::Any, 0, Some(1)),
    ];
    let fault = vec![
        Particle::new("Code", TypeRef::Named("faultcode".to_owned()), 1, Some(1)),
        Particle::new(
            "Reason",
            TypeRef::Named("faultreason".to_owned()),
            1,
            Some(1),
        ),
        Particle::new("Node", TypeRef::Simple(Builtin::String), 0, Some(1)),
        Particle::new("Role", TypeRef::Simple(Builtin::String), 0, Some(1)),
        Particle::new("Detail", TypeRef::Any, 0, Some(1)),
    ];
    Schema {
        target_namespace: SOAP12_ENVELOPE_NS.to_owned(),
        qualified: true,
        complex_types: BTreeMap::from([
            ("faultcode".to_owned(), code),
            ("faultreason".to_owned(), vec![text]),
        ]),
        elements: BTreeMap::from([("Fault".to_owned(), TypeRef::Anonymous(fault))]),
    }
}

/// The local part of a QName's text (`soap:Client` → `Client`).
fn qname_local(text: &str) -> &str {
    let text = text.trim();
    text.rsplit_once(':').map_or(text, |(_, local)| local)
}

/// Checks a Fault's shape, then that its code is one the SOAP version defines. (The canonical
/// tree keeps no namespace declarations, so the code's prefix itself is not resolved.)
fn check_fault(envelope_namespace: &str, fault: &Node) -> Result<(), String> {
    if envelope_namespace == SOAP11_ENVELOPE_NS {
        soap11_fault_schema().validate_global(fault)?;
        let code = fault.children.first().map_or("", |code| code.text.as_str());
        let base = qname_local(code).split('.').next().unwrap_or_default();
        if !matches!(
            base,
            "VersionMismatch" | "MustUnderstand" | "Client" | "Server"
        ) {
            return Err(format!(
                "/Fault/faultcode: {code:?} is not a SOAP 1.1 fault code"
            ));
        }
    } else {
        soap12_fault_schema().validate_global(fault)?;
        let value = fault.children[0].children[0].text.as_str();
        if !matches!(
            qname_local(value),
            "VersionMismatch" | "MustUnderstand" | "DataEncodingUnknown" | "Sender" | "Receiver"
        ) {
            return Err(format!(
                "/Fault/Code/Value: {value:?} is not a SOAP 1.2 fault code"
            ));
        }
    }
    Ok(())
}

/// The child of a SOAP response's Body, after checking the Envelope around it: an
/// `Envelope` in the SOAP 1.1 or 1.2 namespace with an optional `Header` and one `Body` holding
/// exactly one element. Returns the envelope namespace too.
pub fn body_child(document: &Node) -> Result<(&str, &Node), String> {
    let namespace = document.namespace.as_str();
    if document.name != "Envelope" || ![SOAP11_ENVELOPE_NS, SOAP12_ENVELOPE_NS].contains(&namespace)
    {
        return Err(format!(
            "the root is {}, not a SOAP Envelope",
            describe(namespace, &document.name)
        ));
    }
    if !document.text.trim().is_empty() {
        return Err("text directly inside the Envelope".to_owned());
    }
    let mut children = document.children.iter();
    let mut next = children.next();
    if next.is_some_and(|child| child.namespace == namespace && child.name == "Header") {
        next = children.next();
    }
    let body = next
        .filter(|child| child.namespace == namespace && child.name == "Body")
        .ok_or("the Envelope has no Body (after an optional Header)")?;
    if let Some(extra) = children.next() {
        return Err(format!(
            "{} after the Body",
            describe(&extra.namespace, &extra.name)
        ));
    }
    if !body.text.trim().is_empty() {
        return Err("text directly inside the Body".to_owned());
    }
    match body.children.as_slice() {
        [child] => Ok((namespace, child)),
        [] => Err("the Body is empty".to_owned()),
        more => Err(format!("the Body holds {} elements, not one", more.len())),
    }
}

/// Validates the Body child of a SOAP response against the global element of its name.
pub fn validate_body(wsdl_schema: &Schema, soap_body_child: &Node) -> Result<(), String> {
    wsdl_schema.validate_global(soap_body_child)
}

/// Parses a whole SOAP response and validates it: a Fault against the SOAP version's Fault
/// shape, anything else against the bundled WSDL's schema.
pub fn validate_response(xml: &str) -> Result<(), String> {
    let document = canonical::parse(xml)?;
    let (envelope_namespace, child) = body_child(&document)?;
    if child.namespace == envelope_namespace && child.name == "Fault" {
        check_fault(envelope_namespace, child)
    } else {
        validate_body(bundled_schema(), child)
    }
}

// ---------------------------------------------------------------------------------------------
// The validator's own tests: each kind of violation, made by one edit of a valid response.

const TNS: &str = "urn:refunds-gateway:refunds";

fn soap11(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP11_ENVELOPE_NS}"><soap:Body>{body}</soap:Body></soap:Envelope>"#
    )
}

fn soap12(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><env:Envelope xmlns:env="{SOAP12_ENVELOPE_NS}"><env:Body>{body}</env:Body></env:Envelope>"#
    )
}

const ADD_OK: &str = r#"<addAutomaticRefundResponse xmlns="urn:refunds-gateway:refunds"><errors><faultCode>0</faultCode><faultString></faultString></errors><result><refundId>27</refundId></result></addAutomaticRefundResponse>"#;

const STATUS_OK: &str = r#"<getRefundStatusResponse xmlns="urn:refunds-gateway:refunds"><errors><faultCode>0</faultCode><faultString></faultString></errors><result><refundDateAdd>2026-11-20 12:00:00</refundDateAdd><refundValue>10.00</refundValue><refundStatus>Processing</refundStatus><refundDateConfirm></refundDateConfirm><refundExternalId></refundExternalId><refundCurrency>PLN</refundCurrency></result></getRefundStatusResponse>"#;

const LIST_OK: &str = r#"<retrieveRefundsListResponse xmlns="urn:refunds-gateway:refunds"><errors><faultCode>0</faultCode><faultString></faultString></errors><results><sourceType>order</sourceType><sourceId>2001</sourceId><paymentId>20</paymentId><refundValue>30.00</refundValue><refundCurrency>PLN</refundCurrency></results><results><sourceType>order</sourceType><sourceId>2001</sourceId><paymentId>21</paymentId><refundValue>-0.5</refundValue><refundCurrency>PLN</refundCurrency></results><resultsNumberAll>4</resultsNumberAll><resultsNumberPage>2</resultsNumberPage><resultsPage>0</resultsPage><resultsLimit>2</resultsLimit></retrieveRefundsListResponse>"#;

const CONFIRM_OK: &str = r#"<confirmRefundResponse xmlns="urn:refunds-gateway:refunds"><errors><faultCode>0</faultCode><faultString></faultString></errors><result><confirmResult>true</confirmResult></result></confirmRefundResponse>"#;

const FAULT11_OK: &str = r#"<soap:Fault><faultcode>soap:Client</faultcode><faultstring>unknown operation</faultstring></soap:Fault>"#;

const FAULT12_OK: &str = r#"<env:Fault><env:Code><env:Value>env:Sender</env:Value></env:Code><env:Reason><env:Text xml:lang="en">unknown operation</env:Text></env:Reason></env:Fault>"#;

/// `valid` passes; replacing `from` by `to` in it makes it fail with a message containing
/// `expected`. The edit must change the document, so no case can pass by a typo in `from`.
#[track_caller]
fn rejects(valid: &str, from: &str, to: &str, expected: &str) {
    if let Err(error) = validate_response(valid) {
        panic!("the baseline is not valid: {error}\n{valid}");
    }
    assert!(valid.contains(from), "`{from}` is not in the baseline");
    let broken = valid.replacen(from, to, 1);
    match validate_response(&broken) {
        Ok(()) => panic!("accepted an invalid response:\n{broken}"),
        Err(error) => assert!(
            error.contains(expected),
            "rejected for another reason than {expected:?}: {error}"
        ),
    }
}

#[test]
fn valid_responses_pass() {
    for body in [ADD_OK, STATUS_OK, LIST_OK, CONFIRM_OK] {
        for document in [soap11(body), soap12(body)] {
            if let Err(error) = validate_response(&document) {
                panic!("{error}\n{document}");
            }
        }
    }
}

#[test]
fn prefixes_whitespace_and_omitted_optionals_do_not_matter() {
    let prefixed = ADD_OK
        .replace("<", "<r:")
        .replace("<r:/", "</r:")
        .replace("xmlns=", "xmlns:r=");
    let pretty = ADD_OK.replace("><", ">\n  <");
    let without_result = ADD_OK.replace("<result><refundId>27</refundId></result>", "");
    let padded_numbers = CONFIRM_OK.replace(">true<", "> 1\n<");
    let empty_list = r#"<getPossibleAutoRefundsResponse xmlns="urn:refunds-gateway:refunds"><errors><faultCode>1</faultCode><faultString>authentication failed</faultString></errors></getPossibleAutoRefundsResponse>"#;
    for body in [
        &prefixed,
        &pretty,
        &without_result,
        &padded_numbers,
        empty_list,
    ] {
        if let Err(error) = validate_response(&soap11(body)) {
            panic!("{error}\n{body}");
        }
    }
}

#[test]
fn rejects_an_extra_element() {
    let valid = soap11(ADD_OK);
    rejects(
        &valid,
        "</refundId>",
        "</refundId><note>x</note>",
        "unexpected element",
    );
    rejects(
        &valid,
        "</result>",
        "</result><trailer/>",
        "unexpected element",
    );
    rejects(
        &valid,
        "</faultString>",
        "</faultString><faultDetail/>",
        "unexpected element",
    );
    // Before a required element: the stranger is named, not the element it displaced.
    rejects(
        &soap11(STATUS_OK),
        "<result>",
        "<result><refundId>1</refundId>",
        "unexpected element <{urn:refunds-gateway:refunds}refundId>",
    );
}

#[test]
fn rejects_too_many_occurrences() {
    let valid = soap11(ADD_OK);
    rejects(
        &valid,
        "</result>",
        "</result><result><refundId>1</refundId></result>",
        "maxOccurs 1",
    );
    rejects(
        &valid,
        "</faultCode>",
        "</faultCode><faultCode>0</faultCode>",
        "maxOccurs 1",
    );
}

#[test]
fn rejects_the_wrong_order() {
    rejects(
        &soap11(ADD_OK),
        "<faultCode>0</faultCode><faultString></faultString>",
        "<faultString></faultString><faultCode>0</faultCode>",
        "out of order",
    );
    rejects(
        &soap11(ADD_OK),
        "<errors><faultCode>0</faultCode><faultString></faultString></errors><result><refundId>27</refundId></result>",
        "<result><refundId>27</refundId></result><errors><faultCode>0</faultCode><faultString></faultString></errors>",
        "out of order",
    );
    // Two optional elements swapped: nothing is missing, one comes too late.
    rejects(
        &soap11(LIST_OK),
        "<resultsNumberAll>4</resultsNumberAll><resultsNumberPage>2</resultsNumberPage>",
        "<resultsNumberPage>2</resultsNumberPage><resultsNumberAll>4</resultsNumberAll>",
        "out of order",
    );
    // An unbounded element again after the elements that follow it.
    rejects(
        &soap11(LIST_OK),
        "<resultsLimit>2</resultsLimit>",
        "<resultsLimit>2</resultsLimit><results><sourceType>order</sourceType><sourceId>1</sourceId><paymentId>1</paymentId><refundValue>1</refundValue><refundCurrency>PLN</refundCurrency></results>",
        "out of order",
    );
}

#[test]
fn rejects_a_missing_required_element() {
    let valid = soap11(ADD_OK);
    rejects(
        &valid,
        "<faultString></faultString>",
        "",
        "required <faultString> is missing",
    );
    rejects(
        &valid,
        "<errors><faultCode>0</faultCode><faultString></faultString></errors>",
        "",
        "required <errors> is missing",
    );
    rejects(
        &valid,
        "<refundId>27</refundId>",
        "",
        "required <refundId> is missing",
    );
    rejects(
        &soap11(STATUS_OK),
        "<refundCurrency>PLN</refundCurrency>",
        "",
        "required <refundCurrency> is missing",
    );
}

#[test]
fn rejects_the_wrong_namespace() {
    let valid = soap11(ADD_OK);
    // A local element left unqualified although elementFormDefault is qualified.
    rejects(&valid, "<errors>", r#"<errors xmlns="">"#, "namespace");
    rejects(
        &valid,
        "<refundId>",
        r#"<refundId xmlns="urn:other">"#,
        "namespace",
    );
    // The response element itself in no namespace, or in another one.
    rejects(
        &valid,
        r#" xmlns="urn:refunds-gateway:refunds""#,
        "",
        "namespace",
    );
    rejects(&valid, TNS, "urn:refunds-gateway:refund", "namespace");
}

#[test]
fn rejects_an_unknown_global_element() {
    let valid = soap11(ADD_OK);
    let renamed = valid.replace("addAutomaticRefundResponse", "addAutomaticRefundReply");
    let error = validate_response(&renamed).expect_err("an undeclared element passed");
    assert!(error.contains("no global element"), "{error}");
    // A request element is declared too, but is no response: only its own content is checked.
    let request = soap11(r#"<getRefundStatus xmlns="urn:refunds-gateway:refunds"/>"#);
    let error =
        validate_response(&request).expect_err("a request element with response content passed");
    assert!(error.contains("required <params> is missing"), "{error}");
}

#[test]
fn rejects_bad_decimals() {
    for bad in [
        "1e3", "1E3", "1.5e2", "", " ", "1,00", "+1", ".5", "5.", "1.2.3", "0x10", "NaN", "--1",
    ] {
        rejects(
            &soap11(STATUS_OK),
            "<refundValue>10.00</refundValue>",
            &format!("<refundValue>{bad}</refundValue>"),
            "xs:decimal",
        );
    }
}

#[test]
fn rejects_bad_longs_and_ints() {
    for bad in [
        "12a",
        "",
        "1.0",
        "1e3",
        "9223372036854775808",
        "-9223372036854775809",
        "- 1",
        "+",
    ] {
        rejects(
            &soap11(ADD_OK),
            "<refundId>27</refundId>",
            &format!("<refundId>{bad}</refundId>"),
            "xs:long",
        );
    }
    for bad in ["2147483648", "-2147483649", "x"] {
        rejects(
            &soap11(ADD_OK),
            "<faultCode>0</faultCode>",
            &format!("<faultCode>{bad}</faultCode>"),
            "xs:int",
        );
    }
}

#[test]
fn accepts_integers_at_their_limits() {
    for good in [
        "9223372036854775807",
        "-9223372036854775808",
        "+5",
        "007",
        " 42 ",
    ] {
        let document = soap11(&ADD_OK.replace("<refundId>27", &format!("<refundId>{good}")));
        assert_eq!(validate_response(&document), Ok(()), "{good}");
    }
    for good in ["2147483647", "-2147483648", "4001"] {
        let document = soap11(&ADD_OK.replace("<faultCode>0", &format!("<faultCode>{good}")));
        assert_eq!(validate_response(&document), Ok(()), "{good}");
    }
}

#[test]
fn rejects_bad_booleans() {
    for bad in ["yes", "True", "TRUE", "", "2", "t"] {
        rejects(
            &soap11(CONFIRM_OK),
            "<confirmResult>true</confirmResult>",
            &format!("<confirmResult>{bad}</confirmResult>"),
            "xs:boolean",
        );
    }
}

#[test]
fn rejects_text_in_a_complex_element() {
    let valid = soap11(ADD_OK);
    rejects(&valid, "<result>", "<result>27", "text");
    rejects(&valid, "</errors>", "oops</errors>", "text");
    rejects(
        &valid,
        "</addAutomaticRefundResponse>",
        "x</addAutomaticRefundResponse>",
        "text",
    );
    // A complex element with text instead of its children is missing them, or holds text.
    rejects(&valid, "<refundId>27</refundId>", "27", "text");
}

#[test]
fn rejects_elements_inside_a_simple_element() {
    rejects(
        &soap11(ADD_OK),
        "<refundId>27</refundId>",
        "<refundId><value>27</value></refundId>",
        "simple type",
    );
}

#[test]
fn rejects_undeclared_attributes() {
    let valid = soap11(ADD_OK);
    rejects(&valid, "<refundId>", r#"<refundId unit="id">"#, "attribute");
    rejects(
        &valid,
        "<result>",
        r#"<result xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:nil="true">"#,
        "attribute",
    );
}

#[test]
fn checks_the_envelope() {
    let valid = soap11(ADD_OK);
    rejects(
        &valid,
        "</soap:Body>",
        &format!("{CONFIRM_OK}</soap:Body>"),
        "not one",
    );
    rejects(&valid, ADD_OK, "", "empty");
    rejects(
        &valid,
        "</soap:Body>",
        "</soap:Body><soap:Body/>",
        "after the Body",
    );
    rejects(
        &valid,
        SOAP11_ENVELOPE_NS,
        "urn:not-soap",
        "not a SOAP Envelope",
    );
    rejects(
        &valid,
        "</soap:Envelope>",
        "</soap:Envelope><again/>",
        "second root",
    );
    let with_header = valid.replace("<soap:Body>", "<soap:Header/><soap:Body>");
    assert_eq!(validate_response(&with_header), Ok(()));
}

#[test]
fn checks_soap11_faults() {
    let valid = soap11(FAULT11_OK);
    let with_detail = valid.replace(
        "</faultstring>",
        "</faultstring><detail><any>x</any></detail>",
    );
    assert_eq!(validate_response(&with_detail), Ok(()));
    rejects(
        &valid,
        "<faultstring>unknown operation</faultstring>",
        "",
        "required <faultstring> is missing",
    );
    rejects(
        &valid,
        "<faultcode>",
        r#"<faultcode xmlns="urn:x">"#,
        "namespace",
    );
    rejects(
        &valid,
        "soap:Client",
        "soap:Customer",
        "not a SOAP 1.1 fault code",
    );
    rejects(&valid, "soap:Client", "not a qname", "xs:QName");
    rejects(
        &valid,
        "</soap:Fault>",
        "<extra/></soap:Fault>",
        "unexpected element",
    );
    // A 1.2-shaped fault in a 1.1 envelope.
    rejects(
        &valid,
        FAULT11_OK,
        &FAULT12_OK.replace("env:", "soap:"),
        "unexpected element",
    );
}

#[test]
fn checks_soap12_faults() {
    let valid = soap12(FAULT12_OK);
    rejects(&valid, r#" xml:lang="en""#, "", "required attribute");
    rejects(
        &valid,
        "<env:Code><env:Value>env:Sender</env:Value></env:Code>",
        "",
        "required <Code> is missing",
    );
    rejects(
        &valid,
        "<env:Value>env:Sender</env:Value>",
        "<Value>env:Sender</Value>",
        "namespace",
    );
    rejects(
        &valid,
        "env:Sender",
        "env:Client",
        "not a SOAP 1.2 fault code",
    );
    rejects(&valid, "<env:Reason>", "<env:Reason>why", "text");
    rejects(
        &valid,
        "<env:Text xml:lang=\"en\">unknown operation</env:Text>",
        "",
        "required <Text> is missing",
    );
    let two_texts = valid.replace(
        "</env:Reason>",
        "<env:Text xml:lang=\"pl\">nieznana</env:Text></env:Reason>",
    );
    assert_eq!(validate_response(&two_texts), Ok(()));
}

#[test]
fn the_bundled_schema_reads() {
    let schema = bundled_schema();
    assert_eq!(schema.target_namespace, TNS);
    assert!(schema.qualified);
    // Nine requests, nine responses, and the idempotencyKey header.
    assert_eq!(schema.global_element_names().len(), 19);
}

#[test]
fn refuses_schema_constructs_it_does_not_understand() {
    let xsd = |body: &str| {
        format!(
            r#"<xs:schema xmlns:xs="{XS_NS}" xmlns:tns="urn:t" targetNamespace="urn:t" elementFormDefault="qualified">{body}</xs:schema>"#
        )
    };
    let good = xsd(
        r#"<xs:element name="a"><xs:complexType><xs:sequence><xs:element name="b" type="xs:long"/></xs:sequence></xs:complexType></xs:element>"#,
    );
    assert!(Schema::from_xsd(&good).is_ok());
    for (body, expected) in [
        (
            r#"<xs:element name="a"><xs:complexType><xs:choice/></xs:complexType></xs:element>"#,
            "unsupported",
        ),
        (
            r#"<xs:complexType name="t"><xs:sequence/><xs:attribute name="x"/></xs:complexType>"#,
            "unsupported",
        ),
        (r#"<xs:simpleType name="t"/>"#, "unsupported"),
        (
            r#"<xs:element name="a" type="xs:dateTime"/>"#,
            "xs:dateTime",
        ),
        (
            r#"<xs:element name="a" type="tns:missing"/>"#,
            "not declared",
        ),
        (
            r#"<xs:element name="a" type="other:t" xmlns:other="urn:o"/>"#,
            "neither",
        ),
        (r#"<xs:element name="a" type="nope:t"/>"#, "bound prefix"),
        (r#"<xs:element name="a"/>"#, "needs either"),
        (
            r#"<xs:element name="a" type="xs:string" nillable="true"/>"#,
            "nillable",
        ),
        (
            r#"<xs:complexType name="t"><xs:sequence><xs:element ref="tns:a"/></xs:sequence></xs:complexType>"#,
            "ref",
        ),
        (
            r#"<xs:complexType name="t"><xs:sequence><xs:element name="b" type="xs:int" minOccurs="2" maxOccurs="1"/></xs:sequence></xs:complexType>"#,
            "minOccurs",
        ),
        (
            r#"<xs:complexType name="t"><xs:sequence><xs:element name="b" type="xs:int"/><xs:element name="b" type="xs:int"/></xs:sequence></xs:complexType>"#,
            "twice",
        ),
    ] {
        match Schema::from_xsd(&xsd(body)) {
            Ok(_) => panic!("accepted a schema with {body}"),
            Err(error) => assert!(error.contains(expected), "{body}: {error}"),
        }
    }
}

#[test]
fn unqualified_schemas_want_local_elements_in_no_namespace() {
    let schema = Schema::from_xsd(&format!(
        r#"<xs:schema xmlns:xs="{XS_NS}" targetNamespace="urn:t"><xs:element name="a"><xs:complexType><xs:sequence><xs:element name="b" type="xs:int"/></xs:sequence></xs:complexType></xs:element></xs:schema>"#
    ))
    .expect("schema");
    let valid = canonical::parse(r#"<t:a xmlns:t="urn:t"><b>1</b></t:a>"#).expect("xml");
    let qualified = canonical::parse(r#"<a xmlns="urn:t"><b>1</b></a>"#).expect("xml");
    assert_eq!(validate_body(&schema, &valid), Ok(()));
    assert!(
        validate_body(&schema, &qualified)
            .unwrap_err()
            .contains("namespace")
    );
}
