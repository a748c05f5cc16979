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
//! and at most [`MAX_ELEMENTS`] elements (a tiny element such as `<a/>` costs ~25–50x its
//! input, see there).

use crate::error::{PsrpError, Result};
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;
use std::borrow::Cow;

/// The namespace the `xml:` prefix is bound to.
pub(crate) const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// Most attributes (namespace declarations included) one element may carry. WS-Management
/// and CLIXML use fewer than ten; past this the quadratic duplicate check would matter.
pub(crate) const MAX_ATTRIBUTES: usize = 64;

/// Most namespace bindings (`xmlns`, `xmlns:p`) in scope at once, declared on the element and
/// its ancestors. A WinRM envelope declares about ten; each name is resolved among them.
pub(crate) const MAX_NS_BINDINGS: usize = 64;

/// Most elements one document may hold. A node (element or text run) is an 80-byte slot of
/// the document's one node vector (up to twice that while the vector grows) and an attribute
/// a 72-byte slot of its one attribute vector; names, namespace URIs and text borrow the
/// input, copied only where an entity was expanded. Text runs are not counted here, but each
/// is a first child or follows an element (adjacent text merges), so there are at most two
/// per element: this bounds the nodes to 1.5 M, ~120 MB (~240 MB while the vector grows)
/// whatever the input (attributes: ~15x the bytes that spell them). It is twice
/// [`crate::clixml::MAX_VALUES`] (a PSRP message carries one object of a few thousand values;
/// a Receive answer a few dozen streams), so no document this codec can use comes near it.
pub(crate) const MAX_ELEMENTS: usize = 500_000;

/// An attribute (namespace declarations are not kept). Names and values borrow the parsed
/// text unless an entity had to be expanded.
#[derive(Debug, Clone)]
pub(crate) struct Attr<'a> {
    pub ns: Option<Cow<'a, str>>,
    pub name: Cow<'a, str>,
    pub value: Cow<'a, str>,
}

/// Most node (and attribute) slots reserved before parsing: a 160 KB document's worth, more
/// than a Receive answer of ten mailboxes needs.
const RESERVED_NODES: usize = 4096;

/// No node: the end of a sibling list, or no child yet.
const NONE: u32 = u32::MAX;

/// A parsed document. Every node sits in one vector in document order, each element linked to
/// its first and last child and each node to its next sibling, and every attribute in a
/// second vector: two growing allocations per document, where a tree of owned children cost
/// two per element and a deep drop.
#[derive(Debug)]
pub(crate) struct Document<'a> {
    nodes: Vec<Slot<'a>>,
    attrs: Vec<Attr<'a>>,
    root: u32,
}

#[derive(Debug)]
struct Slot<'a> {
    next: u32,
    node: NodeData<'a>,
}

#[derive(Debug)]
enum NodeData<'a> {
    Element(ElementData<'a>),
    Text(Cow<'a, str>),
}

/// What an element is: its name, where its attributes are and its children start.
#[derive(Debug)]
pub(crate) struct ElementData<'a> {
    pub ns: Option<Cow<'a, str>>,
    pub name: Cow<'a, str>,
    /// `attrs[first_attr..end_attr]` of the document.
    first_attr: u32,
    end_attr: u32,
    first_child: u32,
    last_child: u32,
    child_count: u32,
}

/// An element of a [`Document`]: a copyable handle that reads as its [`ElementData`] (`e.name`,
/// `e.ns`).
#[derive(Clone, Copy)]
pub(crate) struct Element<'d, 'a> {
    doc: &'d Document<'a>,
    index: u32,
}

/// A child of an element, in document order.
pub(crate) enum Child<'d, 'a> {
    Element(Element<'d, 'a>),
    Text(&'d str),
}

impl<'a> Document<'a> {
    /// The root element.
    pub fn root(&self) -> Element<'_, 'a> {
        Element {
            doc: self,
            index: self.root,
        }
    }

    /// Every element, in document order.
    pub fn elements(&self) -> impl Iterator<Item = Element<'_, 'a>> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, slot)| matches!(slot.node, NodeData::Element(_)))
            .map(|(index, _)| Element {
                doc: self,
                index: index as u32,
            })
    }

    fn element_mut(&mut self, index: u32) -> &mut ElementData<'a> {
        match &mut self.nodes[index as usize].node {
            NodeData::Element(e) => e,
            NodeData::Text(_) => unreachable!("an element index names an element"),
        }
    }

    /// Appends `node` as the last child of `parent` (the root when there is none), returning
    /// its index.
    fn append(&mut self, parent: Option<u32>, node: NodeData<'a>) -> u32 {
        let index = self.nodes.len() as u32;
        self.nodes.push(Slot { next: NONE, node });
        match parent {
            Some(parent) => {
                let last = {
                    let p = self.element_mut(parent);
                    let last = p.last_child;
                    if last == NONE {
                        p.first_child = index;
                    }
                    p.last_child = index;
                    p.child_count += 1;
                    last
                };
                if last != NONE {
                    self.nodes[last as usize].next = index;
                }
            }
            None => self.root = index,
        }
        index
    }
}

impl<'a> std::ops::Deref for Element<'_, 'a> {
    type Target = ElementData<'a>;

    fn deref(&self) -> &ElementData<'a> {
        self.data()
    }
}

impl std::fmt::Debug for Element<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Element")
            .field("ns", &self.ns)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<'d, 'a> Element<'d, 'a> {
    /// What it is, for as long as its document lives.
    fn data(&self) -> &'d ElementData<'a> {
        match &self.doc.nodes[self.index as usize].node {
            NodeData::Element(e) => e,
            NodeData::Text(_) => unreachable!("an element handle names an element"),
        }
    }

    /// Whether the element is `{ns}name`.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.name == name && self.ns.as_deref() == Some(ns)
    }

    /// Its attributes, in document order.
    pub fn attrs(&self) -> &'d [Attr<'a>] {
        let e = self.data();
        &self.doc.attrs[e.first_attr as usize..e.end_attr as usize]
    }

    /// An attribute without namespace (how every attribute we read is sent), by local name.
    pub fn attr(&self, name: &str) -> Option<&'d str> {
        self.attrs()
            .iter()
            .find(|a| a.ns.is_none() && a.name == name)
            .map(|a| &*a.value)
    }

    /// An attribute in namespace `ns`.
    pub fn attr_ns(&self, ns: &str, name: &str) -> Option<&'d str> {
        self.attrs()
            .iter()
            .find(|a| a.ns.as_deref() == Some(ns) && a.name == name)
            .map(|a| &*a.value)
    }

    /// How many children (elements and text runs) it has.
    pub fn child_count(&self) -> usize {
        self.child_count as usize
    }

    /// The children, elements and text runs, in document order.
    pub fn children(&self) -> impl Iterator<Item = Child<'d, 'a>> + use<'d, 'a> {
        let doc = self.doc;
        let mut next = self.first_child;
        std::iter::from_fn(move || {
            if next == NONE {
                return None;
            }
            let index = next;
            let slot = &doc.nodes[index as usize];
            next = slot.next;
            Some(match &slot.node {
                NodeData::Element(_) => Child::Element(Element { doc, index }),
                NodeData::Text(t) => Child::Text(t),
            })
        })
    }

    /// The child elements.
    pub fn elements(&self) -> impl Iterator<Item = Element<'d, 'a>> + use<'d, 'a> {
        self.children().filter_map(|c| match c {
            Child::Element(e) => Some(e),
            Child::Text(_) => None,
        })
    }

    /// The first child element `{ns}name`.
    pub fn child(&self, ns: &str, name: &str) -> Option<Element<'d, 'a>> {
        self.elements().find(|e| e.is(ns, name))
    }

    fn texts(&self) -> impl Iterator<Item = &'d str> + use<'d, 'a> {
        self.children().filter_map(|c| match c {
            Child::Text(t) => Some(t),
            Child::Element(_) => None,
        })
    }

    /// The concatenated text children (not descendants): borrowed when there is one (adjacent
    /// text is merged while parsing, so that is the common case).
    pub fn text(&self) -> Cow<'d, str> {
        let mut texts = self.texts();
        let Some(first) = texts.next() else {
            return Cow::Borrowed("");
        };
        match texts.next() {
            None => Cow::Borrowed(first),
            Some(second) => {
                let mut out = String::from(first);
                out.push_str(second);
                texts.for_each(|t| out.push_str(t));
                Cow::Owned(out)
            }
        }
    }

    /// Whether there is non-whitespace text directly inside.
    pub fn has_text(&self) -> bool {
        self.texts().any(|t| !t.trim().is_empty())
    }
}

/// A namespace binding an element declares: (prefix, "" for the default; URI).
type Binding<'a> = (Cow<'a, str>, Cow<'a, str>);

/// An open element (its index) and the bindings it declared.
type Open<'a> = (u32, Vec<Binding<'a>>);

/// `part` as a slice of `text` when it lies inside it (quick-xml reading a `&str` hands out
/// slices of it), else a copy: the tree then borrows the document instead of copying names.
fn borrow_in<'a>(text: &'a str, part: &[u8]) -> Result<Cow<'a, str>> {
    let start = (part.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    if let Some(end) = start.checked_add(part.len())
        && end <= text.len()
        && let Some(slice) = text.get(start..end)
    {
        return Ok(Cow::Borrowed(slice));
    }
    std::str::from_utf8(part)
        .map(|s| Cow::Owned(s.to_owned()))
        .map_err(|_| PsrpError::Xml("a name or text is not UTF-8".into()))
}

/// A `Cow` that quick-xml handed out for the lifetime of an event, re-borrowed from `text`
/// when it is a slice of it.
fn rebind<'a>(text: &'a str, value: Cow<'_, str>) -> Result<Cow<'a, str>> {
    match value {
        Cow::Borrowed(s) => borrow_in(text, s.as_bytes()),
        Cow::Owned(s) => Ok(Cow::Owned(s)),
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

/// Parses `text` (a BOM and an XML declaration are allowed) into a document, which borrows
/// `text`.
pub(crate) fn parse(text: &str, max_depth: usize) -> Result<Document<'_>> {
    let text = strip_bom(text);
    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.allow_unmatched_ends = false;

    let mut doc = Document {
        // About one node per 40 bytes of CLIXML or SOAP: one allocation for most documents.
        // Capped: a large document may be one long string, and past the cap the vectors grow
        // with what is there.
        nodes: Vec::with_capacity((text.len() / 40).min(RESERVED_NODES)),
        attrs: Vec::with_capacity((text.len() / 64).min(RESERVED_NODES)),
        root: NONE,
    };
    // Open elements with the namespace bindings each declared.
    let mut stack: Vec<Open<'_>> = Vec::new();
    // Namespace bindings declared by the open elements, and elements seen.
    let mut in_scope = 0usize;
    let mut elements = 0usize;
    loop {
        let pos = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| PsrpError::Xml(format!("at byte {pos}: {e}")))?;
        match event {
            Event::Start(_) | Event::Empty(_) if doc.root != NONE && stack.is_empty() => {
                return Err(PsrpError::Xml("more than one root element".into()));
            }
            Event::Start(start) => {
                admit(&mut elements, stack.len(), max_depth)?;
                let (element, bindings) = open(text, &start, &mut doc.attrs, &stack, in_scope)?;
                in_scope += bindings.len();
                let index = doc.append(stack.last().map(|o| o.0), NodeData::Element(element));
                stack.push((index, bindings));
            }
            Event::Empty(start) => {
                admit(&mut elements, stack.len(), max_depth)?;
                let (element, _) = open(text, &start, &mut doc.attrs, &stack, in_scope)?;
                doc.append(stack.last().map(|o| o.0), NodeData::Element(element));
            }
            Event::End(_) => match stack.pop() {
                Some((_, bindings)) => in_scope -= bindings.len(),
                None => return Err(PsrpError::Xml("end tag without start".into())),
            },
            // Text and CDATA are slices of `text` (entities come as their own events): borrowed
            // as they are, without decoding UTF-8 that a `&str` already is.
            Event::Text(t) => {
                let s = borrow_in(text, &t)?;
                push_text(&mut doc, &stack, s)?;
            }
            Event::CData(c) => {
                let s = borrow_in(text, &c)?;
                if stack.is_empty() {
                    return Err(PsrpError::Xml("CDATA outside the root element".into()));
                }
                push_text(&mut doc, &stack, s)?;
            }
            Event::GeneralRef(r) => {
                let resolved: Cow<'_, str> = match r.resolve_char_ref() {
                    Ok(Some(c)) => Cow::Owned(c.to_string()),
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
                push_text(&mut doc, &stack, resolved)?;
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
    if doc.root == NONE {
        return Err(PsrpError::Xml("no root element".into()));
    }
    Ok(doc)
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

/// Text for the open element: merged into its last child when that is text, else a new child.
fn push_text<'a>(doc: &mut Document<'a>, stack: &[Open<'a>], s: Cow<'a, str>) -> Result<()> {
    match stack.last() {
        Some(&(parent, _)) => {
            let last = doc.element_mut(parent).last_child;
            if last != NONE
                && let NodeData::Text(prev) = &mut doc.nodes[last as usize].node
            {
                prev.to_mut().push_str(&s);
            } else {
                doc.append(Some(parent), NodeData::Text(s));
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

fn lookup<'s, 'a>(
    prefix: &str,
    own: &'s [Binding<'a>],
    stack: &'s [Open<'a>],
) -> Option<&'s Cow<'a, str>> {
    own.iter()
        .chain(stack.iter().rev().flat_map(|(_, b)| b.iter()))
        .find(|(p, _)| p == prefix)
        .map(|(_, uri)| uri)
}

/// The namespace URI `prefix` is bound to (`xml` is always bound).
fn resolve<'a>(prefix: &str, own: &[Binding<'a>], stack: &[Open<'a>]) -> Option<Cow<'a, str>> {
    if prefix == "xml" {
        return Some(Cow::Borrowed(XML_NS));
    }
    lookup(prefix, own, stack).cloned()
}

fn split<'a>(qname: &Cow<'a, str>) -> (Cow<'a, str>, Cow<'a, str>) {
    let (p, l) = match qname.split_once(':') {
        Some((p, l)) => (p, l),
        None => ("", &**qname),
    };
    match qname {
        Cow::Borrowed(q) => {
            // Re-sliced from the borrowed name, so both halves keep its lifetime.
            let q: &'a str = q;
            let at = q.len() - l.len();
            let prefix_len = p.len();
            (Cow::Borrowed(&q[..prefix_len]), Cow::Borrowed(&q[at..]))
        }
        Cow::Owned(_) => (Cow::Owned(p.to_owned()), Cow::Owned(l.to_owned())),
    }
}

/// An element from its start tag, its attributes appended to `all_attrs`; `in_scope` is how
/// many bindings its ancestors declare. On an error, `all_attrs` may hold part of them: the
/// document is discarded then.
fn open<'a>(
    text: &'a str,
    start: &BytesStart<'a>,
    all_attrs: &mut Vec<Attr<'a>>,
    stack: &[Open<'a>],
    in_scope: usize,
) -> Result<(ElementData<'a>, Vec<Binding<'a>>)> {
    let qname = borrow_in(text, start.name().0)?;
    let mut bindings: Vec<Binding<'a>> = Vec::new();
    // Attributes with their qualified name until the element's own bindings are known.
    let first = all_attrs.len();
    let mut attributes = start.attributes();
    // quick-xml's duplicate check scans all earlier attributes: off, and done here once the
    // count is known to be small.
    attributes.with_checks(false);
    for attr in attributes {
        let attr =
            attr.map_err(|e| PsrpError::Xml(format!("attribute of <{}>: {e}", excerpt(&qname))))?;
        let attrs = &all_attrs[first..];
        if attrs.len() + bindings.len() >= MAX_ATTRIBUTES {
            return Err(PsrpError::TooLarge(format!(
                "<{}> has over {MAX_ATTRIBUTES} attributes (MAX_ATTRIBUTES)",
                excerpt(&qname)
            )));
        }
        let key = borrow_in(text, attr.key.0)
            .map_err(|_| PsrpError::Xml("attribute name is not UTF-8".into()))?;
        let declared = |prefix: &str| bindings.iter().any(|(p, _)| p == prefix);
        let duplicate = attrs.iter().any(|a| a.name == key)
            || match key.strip_prefix("xmlns") {
                Some("") => declared(""),
                Some(rest) => rest.strip_prefix(':').is_some_and(declared),
                None => false,
            };
        if duplicate {
            return Err(PsrpError::Xml(format!(
                "duplicate attribute {} on <{}>",
                excerpt(&key),
                excerpt(&qname)
            )));
        }
        let value = attr
            .unescape_value()
            .map_err(|e| PsrpError::Xml(format!("attribute {}: {e}", excerpt(&key))))?;
        let value = rebind(text, value)?;
        if key == "xmlns" {
            bindings.push((Cow::Borrowed(""), value));
        } else if let Some(p) = key.strip_prefix("xmlns:") {
            let p = match &key {
                Cow::Borrowed(k) => {
                    let k: &'a str = k;
                    Cow::Borrowed(&k[k.len() - p.len()..])
                }
                Cow::Owned(_) => Cow::Owned(p.to_owned()),
            };
            bindings.push((p, value));
        } else {
            all_attrs.push(Attr {
                ns: None,
                name: key,
                value,
            });
        }
    }
    if in_scope + bindings.len() > MAX_NS_BINDINGS {
        return Err(PsrpError::TooLarge(format!(
            "over {MAX_NS_BINDINGS} namespace bindings in scope at <{}> (MAX_NS_BINDINGS)",
            excerpt(&qname)
        )));
    }
    let (prefix, local) = split(&qname);
    let ns = match resolve(&prefix, &bindings, stack) {
        Some(uri) if uri.is_empty() && prefix.is_empty() => None,
        None if prefix.is_empty() => None,
        Some(uri) => Some(uri),
        None => {
            return Err(PsrpError::Xml(format!(
                "unbound namespace prefix {}",
                excerpt(&prefix)
            )));
        }
    };
    for attr in &mut all_attrs[first..] {
        if !attr.name.contains(':') {
            continue;
        }
        let (p, l) = split(&attr.name);
        if p.is_empty() {
            attr.name = l;
            continue;
        }
        match resolve(&p, &bindings, stack) {
            Some(uri) => {
                attr.ns = Some(uri);
                attr.name = l;
            }
            None => {
                return Err(PsrpError::Xml(format!(
                    "unbound namespace prefix {}",
                    excerpt(&p)
                )));
            }
        }
    }
    let end = all_attrs.len();
    Ok((
        ElementData {
            ns,
            name: local,
            first_attr: first as u32,
            end_attr: end as u32,
            first_child: NONE,
            last_child: NONE,
            child_count: 0,
        },
        bindings,
    ))
}

/// Escapes text for element content.
pub(crate) fn escape_text(s: &str, out: &mut String) {
    if !s.bytes().any(|b| matches!(b, b'<' | b'>' | b'&')) {
        out.push_str(s);
        return;
    }
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
    if !s
        .bytes()
        .any(|b| matches!(b, b'<' | b'>' | b'&' | b'"' | b'\t' | b'\n' | b'\r'))
    {
        out.push_str(s);
        return;
    }
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

    impl<'d> Element<'d, '_> {
        fn child_text_nodes(&self) -> Vec<&'d str> {
            self.texts().collect()
        }
    }

    #[test]
    fn resolves_namespaces_by_uri_not_prefix() {
        let doc = r#"<?xml version="1.0"?><a:E xmlns:a="urn:x" xmlns="urn:d"><b xmlns:q="urn:y" q:k="1" k="2">t&amp;&#65;<![CDATA[<c>]]></b></a:E>"#;
        let doc = parse(doc, 8).unwrap();
        let root = doc.root();
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

    #[test]
    fn keeps_each_text_run_with_its_own_element() {
        // Text after a child is a new node of the parent, not merged into the child's text
        // or into the parent's text before the child; adjacent text and references merge.
        let doc = parse("<a>x<b>y</b>z&amp;</a>", 8).unwrap();
        let root = doc.root();
        assert_eq!(root.text(), "xz&");
        assert_eq!(root.child_text_nodes(), ["x", "z&"]);
        assert_eq!(root.elements().next().unwrap().text(), "y");
        // A child with no text of its own does not take the parent's.
        let doc = parse("<a><b/>t</a>", 8).unwrap();
        let root = doc.root();
        assert_eq!(root.text(), "t");
        assert_eq!(root.elements().next().unwrap().text(), "");
        assert_eq!(root.elements().next().unwrap().child_count(), 0);
        // An empty element between two runs keeps them apart.
        let doc = parse("<a>p<b></b>q</a>", 8).unwrap();
        let root = doc.root();
        assert_eq!(root.child_text_nodes(), ["p", "q"]);
        assert_eq!(root.text(), "pq");
        assert_eq!(root.elements().next().unwrap().text(), "");
    }

    /// The document written back from the children links: names, attributes and text runs.
    fn write_back(e: Element, out: &mut String) {
        out.push('<');
        out.push_str(&e.name);
        for a in e.attrs() {
            out.push_str(&format!(" {}=\"{}\"", a.name, a.value));
        }
        out.push('>');
        for c in e.children() {
            match c {
                Child::Text(t) => out.push_str(t),
                Child::Element(c) => write_back(c, out),
            }
        }
        out.push_str(&format!("</{}>", e.name));
    }

    #[test]
    fn links_every_node_to_its_parent_in_document_order() {
        // Siblings at several depths, text between and after them, empty elements, attributes
        // on each level: a child linked to the wrong parent, or siblings out of order, would
        // write back differently.
        let input = r#"<r a="1">t0<b k="x"><c>t1</c>t2<d/><e f="2" g="3">t3<h/>t4</e></b>t5<i/><j><k><l>t6</l></k></j>t7</r>"#;
        let doc = parse(input, 8).unwrap();
        let mut out = String::new();
        write_back(doc.root(), &mut out);
        let expected = input
            .replace("<d/>", "<d></d>")
            .replace("<h/>", "<h></h>")
            .replace("<i/>", "<i></i>");
        assert_eq!(out, expected);
        assert_eq!(doc.root().child_count(), 6);
        let names: Vec<String> = doc.elements().map(|e| e.name.to_string()).collect();
        assert_eq!(names, ["r", "b", "c", "d", "e", "h", "i", "j", "k", "l"]);
    }

    #[test]
    fn refuses_duplicate_namespace_declarations() {
        for doc in [
            r#"<e xmlns:a="1" xmlns:a="2"/>"#,
            r#"<e xmlns="1" xmlns="2"/>"#,
        ] {
            assert!(
                matches!(parse(doc, 8), Err(PsrpError::Xml(ref m)) if m.contains("duplicate")),
                "{doc}"
            );
        }
        // The same local name in two namespaces is two attributes, and so are a prefix
        // declaration and a default one.
        let doc = parse(r#"<e xmlns:a="1" a:k="1" k="2"/>"#, 8).unwrap();
        let root = doc.root();
        assert_eq!(root.attr_ns("1", "k"), Some("1"));
        assert_eq!(root.attr("k"), Some("2"));
        assert!(parse(r#"<e xmlns="1" xmlns:a="1"/>"#, 8).is_ok());
    }

    fn with_attrs(n: usize) -> String {
        let attrs: String = (0..n).map(|i| format!(" a{i}=\"v\"")).collect();
        format!("<e{attrs}/>")
    }

    #[test]
    fn caps_attributes_per_element() {
        let doc = with_attrs(MAX_ATTRIBUTES);
        let parsed = parse(&doc, 8).unwrap();
        assert_eq!(parsed.root().attrs().len(), MAX_ATTRIBUTES);
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
            parse(&doc(MAX_ELEMENTS), 8).unwrap().root().child_count(),
            MAX_ELEMENTS - 1
        );
        assert!(matches!(
            parse(&doc(MAX_ELEMENTS + 1), 8),
            Err(PsrpError::TooLarge(m)) if m.contains("MAX_ELEMENTS")
        ));
    }
}
