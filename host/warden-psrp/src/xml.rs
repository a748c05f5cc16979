//! A small namespace-resolved XML tree over quick-xml, shared by the CLIXML and SOAP parsers.
//!
//! Its job is to turn one document into elements named by (namespace URI, local name), so the
//! callers never depend on prefixes. It refuses DTDs (and so every entity but the five
//! predefined ones and character references), unbound prefixes, more than one root, text
//! outside the root, and nesting deeper than the caller's limit. It is iterative: hostile
//! nesting cannot overflow the stack while parsing.
//!
//! It also bounds the work one document can cause, whatever its size: at most
//! [`MAX_ATTRIBUTES`] attributes per element (quick-xml's duplicate check, like ours, compares
//! each attribute with the earlier ones, so 500k attributes would cost ~10^11 comparisons), at
//! most [`MAX_NS_BINDINGS`] namespace bindings in scope (every name is looked up among them),
//! and at most [`MAX_ELEMENTS`] elements (the tree costs ~50x the input for tiny elements).

use crate::error::{PsrpError, Result};
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

/// The namespace the `xml:` prefix is bound to.
pub(crate) const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// Most attributes (namespace declarations included) one element may carry. WS-Management
/// and CLIXML use fewer than ten; past this the quadratic duplicate check would matter.
pub(crate) const MAX_ATTRIBUTES: usize = 64;

/// Most namespace bindings (`xmlns`, `xmlns:p`) in scope at once, declared on the element and
/// its ancestors. A WinRM envelope declares about ten; each name is resolved among them.
pub(crate) const MAX_NS_BINDINGS: usize = 64;

/// Most elements one document may hold. The tree costs ~250 bytes per element (name, namespace
/// URI, vectors), so this bounds it to ~125 MB whatever the input. It is twice
/// [`crate::clixml::MAX_VALUES`] (a PSRP message carries one object of a few thousand values;
/// a Receive answer a few dozen streams), so no document this codec can use comes near it.
pub(crate) const MAX_ELEMENTS: usize = 500_000;

/// An attribute (namespace declarations are not kept).
#[derive(Debug, Clone)]
pub(crate) struct Attr {
    pub ns: Option<String>,
    pub name: String,
    pub value: String,
}

/// A node of the tree.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Element(Element),
    Text(String),
}

/// An element.
#[derive(Debug, Clone, Default)]
pub(crate) struct Element {
    pub ns: Option<String>,
    pub name: String,
    pub attrs: Vec<Attr>,
    pub children: Vec<Node>,
}

impl Element {
    /// Whether the element is `{ns}name`.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.name == name && self.ns.as_deref() == Some(ns)
    }

    /// An attribute without namespace (how every attribute we read is sent), by local name.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.is_none() && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// An attribute in namespace `ns`.
    pub fn attr_ns(&self, ns: &str, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.as_deref() == Some(ns) && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// The child elements.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element `{ns}name`.
    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(ns, name))
    }

    /// The concatenated text children (not descendants).
    pub fn text(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                out.push_str(t);
            }
        }
        out
    }

    /// Whether there is non-whitespace text directly inside.
    pub fn has_text(&self) -> bool {
        self.children
            .iter()
            .any(|n| matches!(n, Node::Text(t) if !t.trim().is_empty()))
    }
}

/// A short, safe excerpt of input for error messages.
pub(crate) fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(40).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// Strips a leading UTF-8 byte order mark.
pub(crate) fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Parses `text` (a BOM and an XML declaration are allowed) into its root element.
pub(crate) fn parse(text: &str, max_depth: usize) -> Result<Element> {
    let text = strip_bom(text);
    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.allow_unmatched_ends = false;

    // Open elements with the namespace bindings each declared.
    let mut stack: Vec<(Element, Vec<(String, String)>)> = Vec::new();
    let mut root: Option<Element> = None;
    // Namespace bindings declared by the open elements, and elements seen.
    let mut in_scope = 0usize;
    let mut elements = 0usize;
    loop {
        let pos = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| PsrpError::Xml(format!("at byte {pos}: {e}")))?;
        match event {
            Event::Start(start) | Event::Empty(start) if root.is_some() && stack.is_empty() => {
                let _ = start;
                return Err(PsrpError::Xml("more than one root element".into()));
            }
            Event::Start(start) => {
                admit(&mut elements, stack.len(), max_depth)?;
                let (element, bindings) = open(&start, &stack, in_scope)?;
                in_scope += bindings.len();
                stack.push((element, bindings));
            }
            Event::Empty(start) => {
                admit(&mut elements, stack.len(), max_depth)?;
                let (element, _) = open(&start, &stack, in_scope)?;
                close(element, &mut stack, &mut root);
            }
            Event::End(_) => match stack.pop() {
                Some((element, bindings)) => {
                    in_scope -= bindings.len();
                    close(element, &mut stack, &mut root)
                }
                None => return Err(PsrpError::Xml("end tag without start".into())),
            },
            Event::Text(t) => {
                let s = t
                    .decode()
                    .map_err(|e| PsrpError::Xml(format!("text: {e}")))?;
                push_text(&mut stack, &s)?;
            }
            Event::CData(c) => {
                let s = c
                    .decode()
                    .map_err(|e| PsrpError::Xml(format!("CDATA: {e}")))?;
                if stack.is_empty() {
                    return Err(PsrpError::Xml("CDATA outside the root element".into()));
                }
                push_text(&mut stack, &s)?;
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => {
                        let name = r
                            .decode()
                            .map_err(|e| PsrpError::Xml(format!("reference: {e}")))?;
                        match &*name {
                            "lt" => "<".into(),
                            "gt" => ">".into(),
                            "amp" => "&".into(),
                            "apos" => "'".into(),
                            "quot" => "\"".into(),
                            other => {
                                return Err(PsrpError::Xml(format!(
                                    "undeclared entity &{};",
                                    excerpt(other)
                                )));
                            }
                        }
                    }
                    Err(e) => return Err(PsrpError::Xml(format!("character reference: {e}"))),
                };
                if stack.is_empty() {
                    return Err(PsrpError::Xml("reference outside the root element".into()));
                }
                push_text(&mut stack, &resolved)?;
            }
            Event::DocType(_) => {
                return Err(PsrpError::Xml("a DTD (<!DOCTYPE) is refused".into()));
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(PsrpError::Xml("unclosed element at end of input".into()));
    }
    root.ok_or_else(|| PsrpError::Xml("no root element".into()))
}

/// Counts one more element at nesting `open`, refusing past [`MAX_ELEMENTS`] or `max_depth`.
fn admit(elements: &mut usize, open: usize, max_depth: usize) -> Result<()> {
    if open >= max_depth {
        return Err(PsrpError::Xml(format!(
            "elements nested deeper than {max_depth}"
        )));
    }
    *elements += 1;
    if *elements > MAX_ELEMENTS {
        return Err(PsrpError::TooLarge(format!(
            "XML document over {MAX_ELEMENTS} elements (MAX_ELEMENTS)"
        )));
    }
    Ok(())
}

fn push_text(stack: &mut [(Element, Vec<(String, String)>)], s: &str) -> Result<()> {
    match stack.last_mut() {
        Some((element, _)) => {
            if let Some(Node::Text(prev)) = element.children.last_mut() {
                prev.push_str(s);
            } else {
                element.children.push(Node::Text(s.to_owned()));
            }
            Ok(())
        }
        None if s.trim().is_empty() => Ok(()),
        None => Err(PsrpError::Xml(format!(
            "text outside the root element: {}",
            excerpt(s.trim())
        ))),
    }
}

fn close(
    element: Element,
    stack: &mut [(Element, Vec<(String, String)>)],
    root: &mut Option<Element>,
) {
    match stack.last_mut() {
        Some((parent, _)) => parent.children.push(Node::Element(element)),
        None => *root = Some(element),
    }
}

fn lookup<'a>(
    prefix: &str,
    own: &'a [(String, String)],
    stack: &'a [(Element, Vec<(String, String)>)],
) -> Option<&'a str> {
    if prefix == "xml" {
        return Some(XML_NS);
    }
    own.iter()
        .chain(stack.iter().rev().flat_map(|(_, b)| b.iter()))
        .find(|(p, _)| p == prefix)
        .map(|(_, uri)| uri.as_str())
}

fn split(qname: &str) -> (&str, &str) {
    match qname.split_once(':') {
        Some((p, l)) => (p, l),
        None => ("", qname),
    }
}

/// An element from its start tag; `in_scope` is how many bindings its ancestors declare.
fn open(
    start: &BytesStart<'_>,
    stack: &[(Element, Vec<(String, String)>)],
    in_scope: usize,
) -> Result<(Element, Vec<(String, String)>)> {
    let qname = std::str::from_utf8(start.name().0)
        .map_err(|_| PsrpError::Xml("element name is not UTF-8".into()))?
        .to_owned();
    let mut bindings = Vec::new();
    let mut raw_attrs = Vec::new();
    // quick-xml's duplicate check scans all earlier attributes: off, and done here once the
    // count is known to be small.
    let mut keys: Vec<&[u8]> = Vec::new();
    let mut attributes = start.attributes();
    attributes.with_checks(false);
    for attr in attributes {
        let attr =
            attr.map_err(|e| PsrpError::Xml(format!("attribute of <{}>: {e}", excerpt(&qname))))?;
        if keys.len() >= MAX_ATTRIBUTES {
            return Err(PsrpError::TooLarge(format!(
                "<{}> has over {MAX_ATTRIBUTES} attributes (MAX_ATTRIBUTES)",
                excerpt(&qname)
            )));
        }
        if keys.contains(&attr.key.0) {
            return Err(PsrpError::Xml(format!(
                "duplicate attribute {} on <{}>",
                excerpt(&String::from_utf8_lossy(attr.key.0)),
                excerpt(&qname)
            )));
        }
        keys.push(attr.key.0);
        let key = std::str::from_utf8(attr.key.0)
            .map_err(|_| PsrpError::Xml("attribute name is not UTF-8".into()))?
            .to_owned();
        let value = attr
            .unescape_value()
            .map_err(|e| PsrpError::Xml(format!("attribute {}: {e}", excerpt(&key))))?
            .into_owned();
        if key == "xmlns" {
            bindings.push((String::new(), value));
        } else if let Some(p) = key.strip_prefix("xmlns:") {
            bindings.push((p.to_owned(), value));
        } else {
            raw_attrs.push((key, value));
        }
    }
    if in_scope + bindings.len() > MAX_NS_BINDINGS {
        return Err(PsrpError::TooLarge(format!(
            "over {MAX_NS_BINDINGS} namespace bindings in scope at <{}> (MAX_NS_BINDINGS)",
            excerpt(&qname)
        )));
    }
    let (prefix, local) = split(&qname);
    let ns = match lookup(prefix, &bindings, stack) {
        Some("") | None if prefix.is_empty() => None,
        Some(uri) => Some(uri.to_owned()),
        None => {
            return Err(PsrpError::Xml(format!(
                "unbound namespace prefix {}",
                excerpt(prefix)
            )));
        }
    };
    let mut attrs = Vec::with_capacity(raw_attrs.len());
    for (key, value) in raw_attrs {
        let (p, l) = split(&key);
        let ns = if p.is_empty() {
            None
        } else {
            match lookup(p, &bindings, stack) {
                Some(uri) => Some(uri.to_owned()),
                None => {
                    return Err(PsrpError::Xml(format!(
                        "unbound namespace prefix {}",
                        excerpt(p)
                    )));
                }
            }
        };
        attrs.push(Attr {
            ns,
            name: l.to_owned(),
            value,
        });
    }
    Ok((
        Element {
            ns,
            name: local.to_owned(),
            attrs,
            children: Vec::new(),
        },
        bindings,
    ))
}

/// Escapes text for element content.
pub(crate) fn escape_text(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            _ => out.push(c),
        }
    }
}

/// Escapes text for a double-quoted attribute value.
pub(crate) fn escape_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            // Attribute-value normalization would turn these into spaces.
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_namespaces_by_uri_not_prefix() {
        let doc = r#"<?xml version="1.0"?><a:E xmlns:a="urn:x" xmlns="urn:d"><b xmlns:q="urn:y" q:k="1" k="2">t&amp;&#65;<![CDATA[<c>]]></b></a:E>"#;
        let root = parse(doc, 8).unwrap();
        assert!(root.is("urn:x", "E"));
        let b = root.child("urn:d", "b").unwrap();
        assert_eq!(b.attr("k"), Some("2"));
        assert_eq!(b.attr_ns("urn:y", "k"), Some("1"));
        assert_eq!(b.text(), "t&A<c>");
    }

    #[test]
    fn refuses_dtd_entities_depth_and_junk() {
        let dtd = r#"<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>"#;
        assert!(matches!(parse(dtd, 8), Err(PsrpError::Xml(m)) if m.contains("DTD")));
        assert!(parse("<x>&a;</x>", 8).is_err());
        assert!(parse("<a><a><a></a></a></a>", 2).is_err());
        assert!(parse("<a><a></a></a>", 2).is_ok());
        assert!(parse("<a/><b/>", 8).is_err());
        assert!(parse("<a>", 8).is_err());
        assert!(parse("<p:a/>", 8).is_err());
        assert!(parse("junk<a/>", 8).is_err());
        assert!(parse("", 8).is_err());
    }

    fn with_attrs(n: usize) -> String {
        let attrs: String = (0..n).map(|i| format!(" a{i}=\"v\"")).collect();
        format!("<e{attrs}/>")
    }

    #[test]
    fn caps_attributes_per_element() {
        let root = parse(&with_attrs(MAX_ATTRIBUTES), 8).unwrap();
        assert_eq!(root.attrs.len(), MAX_ATTRIBUTES);
        assert!(matches!(
            parse(&with_attrs(MAX_ATTRIBUTES + 1), 8),
            Err(PsrpError::TooLarge(m)) if m.contains("MAX_ATTRIBUTES")
        ));
        // Half a million attributes are refused at the 65th, not compared pairwise.
        let started = std::time::Instant::now();
        assert!(parse(&with_attrs(500_000), 8).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Duplicates are still refused.
        assert!(matches!(
            parse(r#"<e a="1" b="2" a="3"/>"#, 8),
            Err(PsrpError::Xml(m)) if m.contains("duplicate")
        ));
    }

    #[test]
    fn caps_namespace_bindings_in_scope() {
        // Bindings spread over nested elements add up; siblings do not.
        let nested = |n: usize| {
            let open: String = (0..n)
                .map(|i| format!("<e xmlns:p{i}=\"urn:{i}\">"))
                .collect();
            format!("{open}{}", "</e>".repeat(n))
        };
        assert!(parse(&nested(MAX_NS_BINDINGS), 100).is_ok());
        assert!(matches!(
            parse(&nested(MAX_NS_BINDINGS + 1), 100),
            Err(PsrpError::TooLarge(m)) if m.contains("MAX_NS_BINDINGS")
        ));
        let siblings: String = (0..MAX_NS_BINDINGS + 1)
            .map(|i| format!("<e xmlns:p{i}=\"urn:{i}\"/>"))
            .collect();
        assert!(parse(&format!("<r>{siblings}</r>"), 8).is_ok());
        // One element declaring too many is refused too.
        let many: String = (0..MAX_NS_BINDINGS + 1)
            .map(|i| format!(" xmlns:p{i}=\"urn:{i}\""))
            .collect();
        assert!(matches!(
            parse(&format!("<r><e{many}/></r>"), 8),
            Err(PsrpError::TooLarge(_))
        ));
    }

    #[test]
    fn caps_elements_per_document() {
        // The root counts too.
        let doc = |n: usize| format!("<r>{}</r>", "<a/>".repeat(n - 1));
        assert_eq!(
            parse(&doc(MAX_ELEMENTS), 8).unwrap().children.len(),
            MAX_ELEMENTS - 1
        );
        assert!(matches!(
            parse(&doc(MAX_ELEMENTS + 1), 8),
            Err(PsrpError::TooLarge(m)) if m.contains("MAX_ELEMENTS")
        ));
    }
}
