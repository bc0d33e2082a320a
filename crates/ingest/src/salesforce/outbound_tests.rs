//! Tests of the Outbound Message parser.

use super::*;

const SAMPLE: &str = include_str!("testdata/outbound-sample.xml");

fn envelope(notifications: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>00D000000000001AAA</OrganizationId>
   {notifications}
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>"#
    )
}

fn notification(id: &str, object: &str, record: &str) -> String {
    format!(
        r#"<Notification><Id>{id}</Id><sObject xsi:type="sf:{object}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com"><sf:Id>{record}</sf:Id><sf:Name>n</sf:Name></sObject></Notification>"#
    )
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

#[test]
fn parses_the_documented_sample() {
    let message = parse(SAMPLE.as_bytes()).unwrap();
    assert_eq!(message.organization_id, "00D5g000004ABCDEAA");
    assert_eq!(message.action_id.as_deref(), Some("04k5g000000XYZAAA2"));
    assert_eq!(message.notifications.len(), 1);
    let n = &message.notifications[0];
    assert_eq!(n.id, "04l5g00000ABCDEAA1");
    assert_eq!(n.object_type, "Opportunity");
    assert_eq!(n.record_id, "0065g00000XyZ12AAB");
    assert_eq!(n.fields.len(), 9);
    assert_eq!(n.fields["Id"], text("0065g00000XyZ12AAB"));
    assert_eq!(n.fields["Amount"], text("1250.50"));
    assert_eq!(n.fields["Name"], text("Acme - 200 licenses"));
    assert_eq!(n.fields["OwnerId"], text("0055g00000AbCdEAAZ"));
    assert_eq!(n.fields["StageName"], text("Closed Won"));
    assert_eq!(n.fields["Description"], Value::Nil);
    assert_eq!(n.text("Description"), None);
}

#[test]
fn parses_several_notifications_of_different_objects() {
    let body = envelope(&format!(
        "{}{}{}",
        notification("N1", "Opportunity", "006A"),
        notification("N2", "Invoice__c", "a0B1"),
        notification("N3", "Account", "001Z"),
    ));
    let message = parse(body.as_bytes()).unwrap();
    let summary: Vec<(&str, &str, &str)> = message
        .notifications
        .iter()
        .map(|n| (n.id.as_str(), n.object_type.as_str(), n.record_id.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("N1", "Opportunity", "006A"),
            ("N2", "Invoice__c", "a0B1"),
            ("N3", "Account", "001Z"),
        ]
    );
}

#[test]
fn prefixes_do_not_matter_only_namespaces_do() {
    let body = r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
      <soap:Header/>
      <soap:Body>
        <out:notifications xmlns:out="http://soap.sforce.com/2005/09/outbound">
          <out:OrganizationId>00DORG</out:OrganizationId>
          <out:Notification>
            <out:Id>04lX</out:Id>
            <out:sObject i:type="sobj:Invoice__c" xmlns:sobj="urn:sobject.partner.soap.sforce.com">
              <sobj:Id>a01X</sobj:Id>
              <sobj:Total__c>10</sobj:Total__c>
              <sobj:Note__c i:nil="1"/>
            </out:sObject>
          </out:Notification>
        </out:notifications>
      </soap:Body>
    </soap:Envelope>"#;
    let message = parse(body.as_bytes()).unwrap();
    assert_eq!(message.organization_id, "00DORG");
    let n = &message.notifications[0];
    assert_eq!(
        (n.id.as_str(), n.object_type.as_str()),
        ("04lX", "Invoice__c")
    );
    assert_eq!(n.fields["Total__c"], text("10"));
    assert_eq!(n.fields["Note__c"], Value::Nil);
}

#[test]
fn the_outbound_namespace_is_required_not_just_the_local_name() {
    let body = SAMPLE.replace("http://soap.sforce.com/2005/09/outbound", "urn:other");
    assert_eq!(
        parse(body.as_bytes()),
        Err(OutboundError::NotAnOutboundMessage)
    );
}

#[test]
fn nil_fields_are_nil_even_with_an_end_tag() {
    let body = SAMPLE.replace(
        r#"<sf:Description xsi:nil="true"/>"#,
        r#"<sf:Description xsi:nil="true"></sf:Description><sf:Empty__c></sf:Empty__c>"#,
    );
    let n = &parse(body.as_bytes()).unwrap().notifications[0];
    assert_eq!(n.fields["Description"], Value::Nil);
    assert_eq!(n.fields["Empty__c"], text(""));
}

#[test]
fn entities_and_character_references_are_decoded() {
    let body = SAMPLE.replace(
        "Acme - 200 licenses",
        "Smith &amp; Sons &lt;EU&gt; &quot;Q1&quot; &apos;26 &#233;t&#xE9; <![CDATA[<raw> & ok]]>",
    );
    let n = &parse(body.as_bytes()).unwrap().notifications[0];
    assert_eq!(
        n.fields["Name"],
        text("Smith & Sons <EU> \"Q1\" '26 été <raw> & ok")
    );
}

#[test]
fn zero_notifications_are_refused() {
    let err = parse(envelope("").as_bytes()).unwrap_err();
    assert_eq!(err, OutboundError::NoNotifications);
    assert!(err.to_string().contains("no notifications"), "{err}");
}

#[test]
fn more_than_one_hundred_notifications_are_refused() {
    let many: String = (0..101)
        .map(|i| notification(&format!("N{i}"), "Opportunity", &format!("006{i}")))
        .collect();
    let err = parse(envelope(&many).as_bytes()).unwrap_err();
    assert_eq!(err, OutboundError::TooManyNotifications(101));
    assert_eq!(
        err.to_string(),
        "the message has 101 notifications; at most 100 are accepted"
    );

    let hundred: String = (0..100)
        .map(|i| notification(&format!("N{i}"), "Opportunity", &format!("006{i}")))
        .collect();
    assert_eq!(
        parse(envelope(&hundred).as_bytes())
            .unwrap()
            .notifications
            .len(),
        100
    );
}

#[test]
fn truncated_xml_is_refused() {
    let sample = SAMPLE.trim_end();
    for cut in [
        sample.len() / 3,
        sample.len() / 2,
        sample.len() - 20,
        sample.len() - 1,
    ] {
        let err = parse(&sample.as_bytes()[..cut]).unwrap_err();
        assert!(
            matches!(err, OutboundError::Truncated | OutboundError::Xml { .. }),
            "cut at {cut}: {err:?}"
        );
    }
    assert_eq!(parse(b""), Err(OutboundError::NoRootElement));
}

#[test]
fn mismatched_tags_are_malformed_xml() {
    let body = SAMPLE.replace("</sf:Amount>", "</sf:Amnt>");
    let err = parse(body.as_bytes()).unwrap_err();
    assert!(matches!(err, OutboundError::Xml { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("malformed XML at byte"),
        "{err}"
    );
}

#[test]
fn a_doctype_is_refused_before_any_entity_is_used() {
    let xxe = SAMPLE.replace(
        r#"<?xml version="1.0" encoding="UTF-8"?>"#,
        r#"<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>"#,
    );
    let xxe = xxe.replace("Acme - 200 licenses", "&xxe;");
    assert_eq!(parse(xxe.as_bytes()), Err(OutboundError::DocType));
}

#[test]
fn undeclared_entities_are_refused() {
    let body = SAMPLE.replace("Acme - 200 licenses", "&xxe;");
    assert_eq!(
        parse(body.as_bytes()),
        Err(OutboundError::UnknownEntity("xxe".into()))
    );
}

#[test]
fn missing_ids_name_the_notification() {
    let second_without_id = envelope(&format!(
        "{}{}",
        notification("N1", "Opportunity", "006A"),
        notification("N2", "Opportunity", "006B").replace("<Id>N2</Id>", ""),
    ));
    let err = parse(second_without_id.as_bytes()).unwrap_err();
    assert_eq!(err.to_string(), "notification 2 has no Id");

    let third_without_record_id = envelope(&format!(
        "{}{}{}",
        notification("N1", "Opportunity", "006A"),
        notification("N2", "Opportunity", "006B"),
        notification("N3", "Opportunity", "006C").replace("<sf:Id>006C</sf:Id>", ""),
    ));
    let err = parse(third_without_record_id.as_bytes()).unwrap_err();
    assert_eq!(err.to_string(), "notification 3 has no sObject Id");

    let nil_record_id = SAMPLE.replace(
        "<sf:Id>0065g00000XyZ12AAB</sf:Id>",
        r#"<sf:Id xsi:nil="true"/>"#,
    );
    assert_eq!(
        parse(nil_record_id.as_bytes()),
        Err(OutboundError::NoSObjectId { index: 1 })
    );

    let no_org = SAMPLE.replace("<OrganizationId>00D5g000004ABCDEAA</OrganizationId>", "");
    assert_eq!(
        parse(no_org.as_bytes()),
        Err(OutboundError::NoOrganizationId)
    );
}

#[test]
fn the_object_type_must_be_named_and_plain() {
    let untyped = SAMPLE.replace(r#" xsi:type="sf:Opportunity""#, "");
    assert_eq!(
        parse(untyped.as_bytes()),
        Err(OutboundError::NoObjectType { index: 1 })
    );
    let odd = SAMPLE.replace("sf:Opportunity", "sf:Opp/../x");
    assert!(matches!(
        parse(odd.as_bytes()),
        Err(OutboundError::InvalidObjectType { index: 1, .. })
    ));
}

#[test]
fn fields_hold_text_only_and_appear_once() {
    let nested = SAMPLE.replace(
        "<sf:Amount>1250.50</sf:Amount>",
        "<sf:Amount><x>1</x></sf:Amount>",
    );
    assert_eq!(
        parse(nested.as_bytes()).unwrap_err().to_string(),
        "notification 1: field Amount must hold text, but contains <x>"
    );
    let twice = SAMPLE.replace(
        "<sf:Amount>1250.50</sf:Amount>",
        "<sf:Amount>1</sf:Amount><sf:Amount>2</sf:Amount>",
    );
    assert_eq!(
        parse(twice.as_bytes()).unwrap_err().to_string(),
        "notification 1: field Amount appears more than once"
    );
}

#[test]
fn other_documents_are_not_outbound_messages() {
    assert_eq!(
        parse(b"<html><body/></html>"),
        Err(OutboundError::NotAnEnvelope("html".into()))
    );
    let empty_body =
        r#"<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body/></e:Envelope>"#;
    assert_eq!(
        parse(empty_body.as_bytes()),
        Err(OutboundError::NotAnOutboundMessage)
    );
    assert_eq!(parse(b"not xml at all"), Err(OutboundError::NoRootElement));
    let trailing = format!("{SAMPLE}<more/>");
    assert_eq!(
        parse(trailing.as_bytes()),
        Err(OutboundError::TrailingContent)
    );
    assert_eq!(
        parse(&[0x3c, 0xff, 0xfe]),
        Err(OutboundError::NotUtf8 { offset: 1 })
    );
}

#[test]
fn declared_field_types_are_kept() {
    let body = SAMPLE.replace(
        "<sf:Amount>1250.50</sf:Amount>",
        r#"<sf:Amount xsi:type="xsd:double">1250.50</sf:Amount><sf:IsWon__c xsi:type="xsd:boolean">true</sf:IsWon__c>"#,
    );
    let n = &parse(body.as_bytes()).unwrap().notifications[0];
    assert_eq!(n.types["Amount"], "double");
    assert_eq!(n.types["IsWon__c"], "boolean");
    assert!(!n.types.contains_key("Name"));
}

#[test]
fn unknown_elements_are_skipped() {
    let body = SAMPLE.replace(
        "<ActionId>",
        "<FutureThing><Deep><Deeper>x</Deeper></Deep></FutureThing><ActionId>",
    );
    assert_eq!(parse(body.as_bytes()).unwrap().notifications.len(), 1);
}

/// A 4 MiB body (the default `ingest.max_body_bytes`) built in each way that used to cost more
/// than linear time or overflow the reader.
fn hostile_bodies() -> Vec<(&'static str, String)> {
    const SIZE: usize = 4 * 1024 * 1024;
    let attributes = |n: usize| {
        let mut xml = String::from(
            "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Body><x",
        );
        for i in 0..n {
            xml.push_str(&format!(" a{i}=\"\""));
        }
        xml.push_str("/></soapenv:Body></soapenv:Envelope>");
        xml
    };
    let nested = {
        let n = SIZE / 7;
        format!(
            "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Body>{}{}</soapenv:Body></soapenv:Envelope>",
            "<a>".repeat(n),
            "</a>".repeat(n)
        )
    };
    let many_elements = {
        let one = format!(
            "<x {}/>",
            (0..MAX_ATTRIBUTES)
                .map(|i| format!("a{i}=\"\""))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let inner = one.repeat(SIZE / one.len());
        format!(
            "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Body>{inner}</soapenv:Body></soapenv:Envelope>"
        )
    };
    vec![
        ("350k attributes on one element", attributes(SIZE / 12)),
        ("deep nesting", nested),
        ("elements with the most attributes allowed", many_elements),
    ]
}

#[test]
fn too_many_attributes_and_too_deep_nesting_are_refused() {
    let mut wide = String::from("<x");
    for i in 0..=MAX_ATTRIBUTES {
        wide.push_str(&format!(" a{i}=\"1\""));
    }
    wide.push_str("/>");
    assert_eq!(
        parse(envelope(&wide).as_bytes()),
        Err(OutboundError::TooManyAttributes {
            element: "x".into()
        })
    );
    let deep = format!("{}{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
    assert_eq!(
        parse(envelope(&deep).as_bytes()),
        Err(OutboundError::TooDeep)
    );
    // Within the limits, the same shapes are fine (skipped as unknown elements).
    let fine = format!("{}{}", "<a b=\"1\">".repeat(10), "</a>".repeat(10));
    assert!(parse(envelope(&fine).as_bytes()).is_err_and(|e| e == OutboundError::NoNotifications));
}

#[test]
fn the_worst_bodies_within_the_size_limit_are_answered_quickly() {
    for (what, body) in hostile_bodies() {
        let started = Instant::now();
        let result = parse_within(body.as_bytes(), Some(Duration::from_secs(1)));
        let took = started.elapsed();
        eprintln!("{what}: {} bytes, {took:?}, {result:?}", body.len());
        assert!(result.is_err(), "{what}");
        // Generous for an unoptimized build on a loaded machine; BENCHMARKS.md has the figures.
        assert!(took < Duration::from_secs(3), "{what} took {took:?}");
    }
}

#[test]
fn the_time_budget_stops_a_slow_parse() {
    let (_, body) = hostile_bodies().swap_remove(2);
    assert_eq!(
        parse_within(body.as_bytes(), Some(Duration::ZERO)),
        Err(OutboundError::TooSlow {
            budget: Duration::ZERO
        })
    );
}
