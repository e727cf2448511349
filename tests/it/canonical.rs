//! Canonical XML comparison: namespaces resolved (prefixes don't matter), attributes sorted,
//! namespace declarations, comments and whitespace-only text dropped, over the FULL document:
//! anything after the root element other than comments and whitespace is an error.

use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub namespace: String,
    pub name: String,
    pub attributes: Vec<(String, String, String)>,
    pub text: String,
    pub children: Vec<Node>,
}

fn namespace_of(result: &ResolveResult<'_>) -> String {
    match result {
        ResolveResult::Bound(namespace) => namespace.as_ref().to_owned(),
        _ => String::new(),
    }
}

/// Parses a whole document into its canonical tree.
pub fn parse(xml: &str) -> Result<Node, String> {
    let xml = xml.strip_prefix('\u{feff}').unwrap_or(xml);
    let mut reader = NsReader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    loop {
        let (namespace, event) = match reader.read_resolved_event() {
            Ok((namespace, event)) => (namespace_of(&namespace), event),
            Err(error) => {
                return Err(format!(
                    "malformed XML at byte {}: {error}",
                    reader.error_position()
                ));
            }
        };
        match event {
            Event::Start(start) => {
                if root.is_some() {
                    return Err("a second root element".to_owned());
                }
                stack.push(node_of(&reader, namespace, &start)?);
            }
            Event::Empty(start) => {
                if root.is_some() {
                    return Err("a second root element".to_owned());
                }
                let node = node_of(&reader, namespace, &start)?;
                close(&mut stack, &mut root, node);
            }
            Event::End(_) => {
                let node = stack.pop().ok_or("an end tag without a start")?;
                close(&mut stack, &mut root, node);
            }
            Event::Text(text) => append_text(&mut stack, &root, &text.xml10_content())?,
            Event::CData(data) => append_text(&mut stack, &root, &data.xml10_content())?,
            Event::GeneralRef(reference) => {
                let character = match reference.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(character) => character,
                    None => match &*reference.xml10_content() {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "apos" => '\'',
                        "quot" => '"',
                        other => return Err(format!("unknown entity {other}")),
                    },
                };
                append_text(&mut stack, &root, character.encode_utf8(&mut [0; 4]))?;
            }
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::DocType(_) => return Err("a DOCTYPE".to_owned()),
        }
    }
    if !stack.is_empty() {
        return Err("the document ends inside an element".to_owned());
    }
    let mut root = root.ok_or("no root element")?;
    trim(&mut root);
    Ok(root)
}

fn node_of(
    reader: &NsReader<&[u8]>,
    namespace: String,
    start: &BytesStart<'_>,
) -> Result<Node, String> {
    let mut attributes = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| e.to_string())?;
        let key = attribute.key.as_ref();
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        let (attribute_namespace, local) = reader.resolver().resolve_attribute(attribute.key);
        let value = attribute
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| e.to_string())?
            .into_owned();
        attributes.push((
            namespace_of(&attribute_namespace),
            local.as_ref().to_owned(),
            value,
        ));
    }
    attributes.sort();
    Ok(Node {
        namespace,
        name: start.local_name().as_ref().to_owned(),
        attributes,
        text: String::new(),
        children: Vec::new(),
    })
}

fn close(stack: &mut [Node], root: &mut Option<Node>, node: Node) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(node),
        None => *root = Some(node),
    }
}

fn append_text(stack: &mut [Node], root: &Option<Node>, text: &str) -> Result<(), String> {
    match stack.last_mut() {
        Some(node) => {
            node.text.push_str(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None if root.is_some() => Err(format!("text after the root element: {:?}", text.trim())),
        None => Err(format!("text before the root element: {:?}", text.trim())),
    }
}

fn trim(node: &mut Node) {
    if !node.children.is_empty() && node.text.trim().is_empty() {
        node.text.clear();
    }
    for child in &mut node.children {
        trim(child);
    }
}
