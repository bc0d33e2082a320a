//! Parser for Salesforce Outbound Messages: SOAP 1.1 envelopes whose body holds one
//! `notifications` element (namespace [`OUTBOUND_NS`]) with 1–100 `Notification`s, each carrying
//! one sObject.
//!
//! Elements are matched by namespace and local name, never by prefix: Salesforce writes
//! `soapenv:`/`sf:`, but any prefix bound to the same namespace is the same document. Unknown
//! elements are skipped so that fields Salesforce adds in later API versions do not break ingest.
//! DOCTYPEs are refused outright, and only the five predefined XML entities and character
//! references are expanded, so no external or recursive entity can ever be resolved.
//!
//! The work stays linear in the body's size, however hostile: elements may nest at most
//! [`MAX_DEPTH`] deep and carry at most [`MAX_ATTRIBUTES`] attributes (Salesforce writes 6 levels
//! and a handful of attributes), and [`parse_within`] stops at a time budget.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use quick_xml::NsReader;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};

/// The namespace of `notifications`, `Notification`, `Id`, `sObject` and `OrganizationId`.
pub const OUTBOUND_NS: &str = "http://soap.sforce.com/2005/09/outbound";
/// Salesforce sends at most this many notifications per message.
pub const MAX_NOTIFICATIONS: usize = 100;
/// How deep elements may nest (an Outbound Message's fields are 6 levels deep).
pub const MAX_DEPTH: usize = 32;
/// Attributes one element may carry (namespace declarations included).
pub const MAX_ATTRIBUTES: usize = 32;
/// Events read between two looks at the clock.
const EVENTS_PER_CLOCK_CHECK: u32 = 256;

const SOAP11_ENVELOPE_NS: &[u8] = b"http://schemas.xmlsoap.org/soap/envelope/";
const SOAP12_ENVELOPE_NS: &[u8] = b"http://www.w3.org/2003/05/soap-envelope";
const XSI_NS: &[u8] = b"http://www.w3.org/2001/XMLSchema-instance";

/// One Outbound Message as Salesforce sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    pub organization_id: String,
    pub action_id: Option<String>,
    pub notifications: Vec<Notification>,
}

/// One record change inside an Outbound Message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Salesforce's id for this notification; the same on every redelivery.
    pub id: String,
    /// The sObject's type without namespace prefix, e.g. `Opportunity` or `Invoice__c`.
    pub object_type: String,
    /// The sObject's `Id`.
    pub record_id: String,
    /// Every field the message carries (including `Id`), by its local name.
    pub fields: BTreeMap<String, Value>,
    /// The XML Schema type of the fields that declare one (`xsi:type="xsd:double"` →
    /// `double`), so that typed values travel typed.
    pub types: BTreeMap<String, String>,
}

impl Notification {
    /// The field's text, or None when it is absent or nil.
    pub fn text(&self, field: &str) -> Option<&str> {
        match self.fields.get(field) {
            Some(Value::Text(text)) => Some(text),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `xsi:nil="true"`: the field is set to nothing.
    Nil,
    Text(String),
}

/// What is wrong with a body that is not a usable Outbound Message. Notification numbers count
/// from 1 in document order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    #[error("the body is not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("malformed XML at byte {position}: {detail}")]
    Xml { position: u64, detail: String },
    #[error("DOCTYPE and entity declarations are not accepted")]
    DocType,
    #[error("elements nest more than {MAX_DEPTH} deep")]
    TooDeep,
    #[error("element <{element}> has more than {MAX_ATTRIBUTES} attributes")]
    TooManyAttributes { element: String },
    #[error("the message took more than {} ms to read", .budget.as_millis())]
    TooSlow { budget: Duration },
    #[error("unknown entity reference &{0}; (only the predefined XML entities are accepted)")]
    UnknownEntity(String),
    #[error("the XML ends before the document is complete (truncated body?)")]
    Truncated,
    #[error("the body holds no XML element")]
    NoRootElement,
    #[error("the body has content after the end of the SOAP envelope")]
    TrailingContent,
    #[error("not a SOAP envelope: the root element is <{0}>")]
    NotAnEnvelope(String),
    #[error("the SOAP envelope has no Body")]
    NoBody,
    #[error(
        "not a Salesforce Outbound Message: the SOAP body has no <notifications> element in namespace {OUTBOUND_NS}"
    )]
    NotAnOutboundMessage,
    #[error("the SOAP body holds more than one <notifications> element")]
    SeveralNotificationLists,
    #[error("element <{element}> must hold text, but contains <{child}>")]
    NestedElement { element: String, child: String },
    #[error("the message has no OrganizationId")]
    NoOrganizationId,
    #[error("the message has no notifications (Salesforce sends 1 to {MAX_NOTIFICATIONS})")]
    NoNotifications,
    #[error("the message has {0} notifications; at most {MAX_NOTIFICATIONS} are accepted")]
    TooManyNotifications(usize),
    #[error("notification {index} has no Id")]
    NoNotificationId { index: usize },
    #[error("notification {index} has no sObject")]
    NoSObject { index: usize },
    #[error("notification {index} has more than one sObject")]
    SeveralSObjects { index: usize },
    #[error("notification {index} has no sObject Id")]
    NoSObjectId { index: usize },
    #[error("notification {index}: the sObject has no xsi:type naming its object type")]
    NoObjectType { index: usize },
    #[error("notification {index}: {value:?} is not a valid object type")]
    InvalidObjectType { index: usize, value: String },
    #[error("notification {index}: field {field} appears more than once")]
    DuplicateField { index: usize, field: String },
    #[error("notification {index}: field {field} must hold text, but contains <{child}>")]
    NestedField {
        index: usize,
        field: String,
        child: String,
    },
    #[error("notification {index}: {field} {value:?} is not a Salesforce date-time")]
    InvalidDateTime {
        index: usize,
        field: &'static str,
        value: String,
    },
}

/// Parses and validates an Outbound Message.
pub fn parse(body: &[u8]) -> Result<OutboundMessage, OutboundError> {
    parse_within(body, None)
}

/// [`parse`], giving up with [`OutboundError::TooSlow`] once `budget` has passed.
pub fn parse_within(
    body: &[u8],
    budget: Option<Duration>,
) -> Result<OutboundMessage, OutboundError> {
    let text = std::str::from_utf8(body).map_err(|e| OutboundError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let mut parser = Parser {
        reader: NsReader::from_str(text),
        depth: 0,
        budget: budget.map(|b| (b, Instant::now() + b)),
        events: 0,
    };
    let root = parser.root()?;
    if !(root.ns.is_soap_envelope() && root.local == "Envelope") {
        return Err(OutboundError::NotAnEnvelope(root.local));
    }
    let mut message = None;
    if !root.empty {
        while let Some(child) = parser.next_child()? {
            if child.ns.is_soap_envelope() && child.local == "Body" && message.is_none() {
                message = Some(parser.body(&child)?);
            } else {
                parser.skip(&child)?;
            }
        }
    }
    parser.expect_end_of_document()?;
    message.ok_or(OutboundError::NoBody)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ns {
    SoapEnvelope,
    Outbound,
    Other,
}

impl Ns {
    fn is_soap_envelope(self) -> bool {
        self == Ns::SoapEnvelope
    }

    fn of(resolved: &ResolveResult<'_>) -> Ns {
        match resolved {
            ResolveResult::Bound(Namespace(ns))
                if *ns == SOAP11_ENVELOPE_NS || *ns == SOAP12_ENVELOPE_NS =>
            {
                Ns::SoapEnvelope
            }
            ResolveResult::Bound(Namespace(ns)) if *ns == OUTBOUND_NS.as_bytes() => Ns::Outbound,
            _ => Ns::Other,
        }
    }
}

fn too_many_attributes(start: &BytesStart<'_>) -> OutboundError {
    OutboundError::TooManyAttributes {
        element: String::from_utf8_lossy(start.local_name().as_ref()).into_owned(),
    }
}

/// An opened element, with the `xsi:` attributes the format uses already resolved (they must be
/// read while the reader still has the element's namespace scope).
struct Element {
    ns: Ns,
    local: String,
    /// `<x/>`: there is no end tag to consume.
    empty: bool,
    xsi_type: Option<String>,
    nil: bool,
}

impl Element {
    fn is(&self, local: &str) -> bool {
        self.ns == Ns::Outbound && self.local == local
    }
}

/// An sObject's type, fields and declared field types.
type SObject = (String, BTreeMap<String, Value>, BTreeMap<String, String>);

struct Parser<'i> {
    reader: NsReader<&'i [u8]>,
    /// Elements open now.
    depth: usize,
    /// The budget and when it runs out.
    budget: Option<(Duration, Instant)>,
    /// Events read so far.
    events: u32,
}

impl<'i> Parser<'i> {
    /// Keeps every event within the limits: called on each one read, before it is used.
    /// `count_attributes` is false where the caller reads the element's attributes itself (and
    /// counts them on the way): every pass over 32 attributes of thousands of elements shows.
    fn limit(&mut self, event: &Event<'_>, count_attributes: bool) -> Result<(), OutboundError> {
        self.events = self.events.wrapping_add(1);
        if self.events.is_multiple_of(EVENTS_PER_CLOCK_CHECK)
            && let Some((budget, deadline)) = self.budget
            && Instant::now() > deadline
        {
            return Err(OutboundError::TooSlow { budget });
        }
        match event {
            Event::Start(start) | Event::Empty(start) => {
                if let Event::Start(_) = event {
                    self.depth += 1;
                    if self.depth > MAX_DEPTH {
                        return Err(OutboundError::TooDeep);
                    }
                }
                // Counted without quick-xml's duplicate check, which is quadratic.
                if count_attributes
                    && start
                        .attributes()
                        .with_checks(false)
                        .nth(MAX_ATTRIBUTES)
                        .is_some()
                {
                    return Err(too_many_attributes(start));
                }
            }
            Event::End(_) => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
        Ok(())
    }

    /// The next event, within the limits.
    fn read_event(&mut self) -> Result<Event<'i>, OutboundError> {
        let event = self.reader.read_event().map_err(|e| self.xml(e))?;
        self.limit(&event, true)?;
        Ok(event)
    }

    /// The document element, after the XML declaration, comments and processing instructions.
    fn root(&mut self) -> Result<Element, OutboundError> {
        match self.next_child() {
            Ok(Some(root)) => Ok(root),
            Ok(None) | Err(OutboundError::Truncated) => Err(OutboundError::NoRootElement),
            Err(e) => Err(e),
        }
    }

    /// The next child element of the element being read, or None at its end tag. Text between
    /// elements (indentation) is ignored.
    fn next_child(&mut self) -> Result<Option<Element>, OutboundError> {
        loop {
            let (ns, event) = match self.reader.read_resolved_event() {
                Ok((resolved, event)) => (Ns::of(&resolved), event),
                Err(e) => return Err(self.xml(e)),
            };
            self.limit(&event, false)?;
            match event {
                Event::Start(start) => return self.element(ns, &start, false).map(Some),
                Event::Empty(start) => return self.element(ns, &start, true).map(Some),
                Event::End(_) => return Ok(None),
                Event::DocType(_) => return Err(OutboundError::DocType),
                Event::Eof => return Err(OutboundError::Truncated),
                Event::Text(_)
                | Event::CData(_)
                | Event::GeneralRef(_)
                | Event::Comment(_)
                | Event::Decl(_)
                | Event::PI(_) => {}
            }
        }
    }

    fn element(
        &self,
        ns: Ns,
        start: &BytesStart<'_>,
        empty: bool,
    ) -> Result<Element, OutboundError> {
        let local = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
        let mut xsi_type = None;
        let mut nil = false;
        // Without quick-xml's duplicate-name check: it compares every pair of attributes, and
        // a repeated attribute changes nothing that matters here (the last `xsi:type` wins).
        for (index, attribute) in start.attributes().with_checks(false).enumerate() {
            if index == MAX_ATTRIBUTES {
                return Err(too_many_attributes(start));
            }
            let attribute = attribute.map_err(|e| self.invalid(e.into()))?;
            let (resolved, name) = self.reader.resolve_attribute(attribute.key);
            let is_xsi = matches!(resolved, ResolveResult::Bound(Namespace(ns)) if ns == XSI_NS);
            if !is_xsi {
                continue;
            }
            match name.as_ref() {
                b"type" => {
                    let value = attribute.unescape_value().map_err(|e| self.invalid(e))?;
                    xsi_type = Some(value.trim().to_owned());
                }
                b"nil" => nil = attribute.as_bool().unwrap_or(false),
                _ => {}
            }
        }
        Ok(Element {
            ns,
            local,
            empty,
            xsi_type,
            nil,
        })
    }

    /// Consumes an element and everything in it.
    fn skip(&mut self, element: &Element) -> Result<(), OutboundError> {
        if element.empty {
            return Ok(());
        }
        let mut depth = 1usize;
        loop {
            match self.read_event()? {
                Event::Start(_) => depth += 1,
                Event::End(_) => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                Event::DocType(_) => return Err(OutboundError::DocType),
                Event::Eof => return Err(OutboundError::Truncated),
                _ => {}
            }
        }
    }

    /// The text content of an element that must not contain elements; `nested` builds the error
    /// naming the element that was found inside.
    fn text(
        &mut self,
        element: &Element,
        nested: impl FnOnce(String) -> OutboundError,
    ) -> Result<String, OutboundError> {
        let mut text = String::new();
        if element.empty {
            return Ok(text);
        }
        loop {
            match self.read_event()? {
                Event::Text(t) => {
                    text.push_str(&t.xml10_content().map_err(|e| self.invalid(e.into()))?)
                }
                Event::CData(c) => {
                    text.push_str(&c.xml10_content().map_err(|e| self.invalid(e.into()))?)
                }
                Event::GeneralRef(r) => text.push_str(&self.entity(&r)?),
                Event::Start(s) | Event::Empty(s) => {
                    return Err(nested(
                        String::from_utf8_lossy(s.local_name().as_ref()).into_owned(),
                    ));
                }
                Event::End(_) => return Ok(text),
                Event::DocType(_) => return Err(OutboundError::DocType),
                Event::Eof => return Err(OutboundError::Truncated),
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
            }
        }
    }

    /// Text of a header element (`OrganizationId`, `Id`, …): trimmed, None when empty or nil.
    fn header_text(&mut self, element: &Element) -> Result<Option<String>, OutboundError> {
        let text = self.text(element, |child| OutboundError::NestedElement {
            element: element.local.clone(),
            child,
        })?;
        let text = text.trim();
        Ok((!element.nil && !text.is_empty()).then(|| text.to_owned()))
    }

    fn entity(&self, reference: &BytesRef<'_>) -> Result<String, OutboundError> {
        if let Some(c) = reference.resolve_char_ref().map_err(|e| self.invalid(e))? {
            return Ok(c.to_string());
        }
        let name = reference.decode().map_err(|e| self.invalid(e.into()))?;
        quick_xml::escape::resolve_predefined_entity(&name)
            .map(str::to_owned)
            .ok_or_else(|| OutboundError::UnknownEntity(name.into_owned()))
    }

    fn expect_end_of_document(&mut self) -> Result<(), OutboundError> {
        loop {
            match self.read_event()? {
                Event::Eof => return Ok(()),
                Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => {}
                Event::Comment(_) | Event::PI(_) => {}
                Event::DocType(_) => return Err(OutboundError::DocType),
                _ => return Err(OutboundError::TrailingContent),
            }
        }
    }

    /// An error of the reader itself, at the position where it found the problem.
    fn xml(&self, error: quick_xml::Error) -> OutboundError {
        OutboundError::Xml {
            position: self.reader.error_position(),
            detail: error.to_string(),
        }
    }

    /// An error in an event already read (attributes, references), at the end of that event.
    fn invalid(&self, error: quick_xml::Error) -> OutboundError {
        OutboundError::Xml {
            position: self.reader.buffer_position(),
            detail: error.to_string(),
        }
    }

    fn body(&mut self, body: &Element) -> Result<OutboundMessage, OutboundError> {
        let mut message = None;
        if !body.empty {
            while let Some(child) = self.next_child()? {
                if child.is("notifications") {
                    if message.is_some() {
                        return Err(OutboundError::SeveralNotificationLists);
                    }
                    message = Some(self.notifications(&child)?);
                } else {
                    self.skip(&child)?;
                }
            }
        }
        message.ok_or(OutboundError::NotAnOutboundMessage)
    }

    fn notifications(&mut self, list: &Element) -> Result<OutboundMessage, OutboundError> {
        let mut organization_id = None;
        let mut action_id = None;
        let mut notifications = Vec::new();
        if !list.empty {
            while let Some(child) = self.next_child()? {
                if child.is("OrganizationId") {
                    organization_id = self.header_text(&child)?;
                } else if child.is("ActionId") {
                    action_id = self.header_text(&child)?;
                } else if child.is("Notification") {
                    let index = notifications.len() + 1;
                    notifications.push(self.notification(index, &child)?);
                } else {
                    self.skip(&child)?;
                }
            }
        }
        let organization_id = organization_id.ok_or(OutboundError::NoOrganizationId)?;
        match notifications.len() {
            0 => Err(OutboundError::NoNotifications),
            n if n > MAX_NOTIFICATIONS => Err(OutboundError::TooManyNotifications(n)),
            _ => Ok(OutboundMessage {
                organization_id,
                action_id,
                notifications,
            }),
        }
    }

    fn notification(
        &mut self,
        index: usize,
        element: &Element,
    ) -> Result<Notification, OutboundError> {
        let mut id = None;
        let mut sobject = None;
        if !element.empty {
            while let Some(child) = self.next_child()? {
                if child.is("Id") {
                    id = self.header_text(&child)?;
                } else if child.is("sObject") {
                    if sobject.is_some() {
                        return Err(OutboundError::SeveralSObjects { index });
                    }
                    sobject = Some(self.sobject(index, &child)?);
                } else {
                    self.skip(&child)?;
                }
            }
        }
        let id = id.ok_or(OutboundError::NoNotificationId { index })?;
        let (object_type, fields, types) = sobject.ok_or(OutboundError::NoSObject { index })?;
        let record_id = match fields.get("Id") {
            Some(Value::Text(id)) if !id.trim().is_empty() => id.trim().to_owned(),
            _ => return Err(OutboundError::NoSObjectId { index }),
        };
        Ok(Notification {
            id,
            object_type,
            record_id,
            fields,
            types,
        })
    }

    fn sobject(&mut self, index: usize, element: &Element) -> Result<SObject, OutboundError> {
        let object_type = object_type(index, element.xsi_type.as_deref())?;
        let mut fields = BTreeMap::new();
        let mut types = BTreeMap::new();
        if !element.empty {
            while let Some(child) = self.next_child()? {
                let text = self.text(&child, |nested| OutboundError::NestedField {
                    index,
                    field: child.local.clone(),
                    child: nested,
                })?;
                let value = if child.nil {
                    Value::Nil
                } else {
                    Value::Text(text)
                };
                if let Some(xsd) = &child.xsi_type {
                    let local = xsd.rsplit_once(':').map_or(xsd.as_str(), |(_, l)| l);
                    types.insert(child.local.clone(), local.to_owned());
                }
                if fields.insert(child.local.clone(), value).is_some() {
                    return Err(OutboundError::DuplicateField {
                        index,
                        field: child.local,
                    });
                }
            }
        }
        Ok((object_type, fields, types))
    }
}

/// `sf:Opportunity` → `Opportunity`. Salesforce API names are letters, digits and underscores
/// (custom objects end in `__c`); anything else would be unsafe in Kafka keys.
fn object_type(index: usize, xsi_type: Option<&str>) -> Result<String, OutboundError> {
    let value = xsi_type.ok_or(OutboundError::NoObjectType { index })?;
    let name = value.rsplit_once(':').map_or(value, |(_, local)| local);
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(name.to_owned())
    } else {
        Err(OutboundError::InvalidObjectType {
            index,
            value: value.to_owned(),
        })
    }
}

#[cfg(test)]
#[path = "outbound_tests.rs"]
mod tests;
