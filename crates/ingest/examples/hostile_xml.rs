//! How long the Outbound Message parser takes on the slowest bodies the size limit lets in, in a
//! release build (the figure behind the "under 100 ms" bound in BENCHMARKS.md):
//!
//!   cargo run --release -p crm-sync-ingest --example hostile_xml
//!
//! Each body is parsed 20 times with the service's 1 s budget; prints the median and the worst,
//! and a valid 100-notification message of ordinary size for comparison.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use crm_sync_ingest::salesforce::outbound;

/// Just under the service's 4 MiB body limit.
const SIZE: usize = 4 * 1024 * 1024 - 1024;

fn envelope(inner: &str) -> String {
    format!(
        "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Body>{inner}</soapenv:Body></soapenv:Envelope>"
    )
}

fn hostile_bodies() -> Vec<(&'static str, String)> {
    let mut wide = String::from("<x");
    let mut i = 0;
    while wide.len() < SIZE - 200 {
        wide.push_str(&format!(" a{i}=\"\""));
        i += 1;
    }
    wide.push_str("/>");
    let deep = format!("{}{}", "<a>".repeat(SIZE / 8), "</a>".repeat(SIZE / 8));
    let attributes: Vec<String> = (0..32).map(|i| format!("a{i}=\"\"")).collect();
    let one = format!("<x {}/>", attributes.join(" "));
    let many = one.repeat((SIZE - 200) / one.len());
    let skipped = format!("<y>{}</y>", one.repeat((SIZE - 210) / one.len()));
    vec![
        ("~350,000 attributes on one element", envelope(&wide)),
        ("elements nested ~460,000 deep", envelope(&deep)),
        ("32 attributes on each of ~18,700 elements", envelope(&many)),
        (
            "the same inside an element that is skipped",
            envelope(&skipped),
        ),
    ]
}

fn valid_message(notifications: usize) -> String {
    let notification = |i: usize| {
        format!(
            "<Notification><Id>04l5g00000AbCd{i:04}</Id><sObject xsi:type=\"sf:Opportunity\"><sf:Id>006A{i:014}</sf:Id><sf:Amount>{i}00</sf:Amount><sf:CloseDate>2026-11-20</sf:CloseDate><sf:Name>Acme {i}</sf:Name><sf:OwnerId>005A{i:014}</sf:OwnerId><sf:StageName>Closed Won</sf:StageName></sObject></Notification>"
        )
    };
    let all: String = (0..notifications).map(notification).collect();
    format!(
        "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soapenv:Body><notifications xmlns=\"http://soap.sforce.com/2005/09/outbound\" xmlns:sf=\"urn:sobject.enterprise.soap.sforce.com\"><OrganizationId>00D5g000004XyZaEAK</OrganizationId><ActionId>04k5g000000AbCdAAK</ActionId><SessionId xsi:nil=\"true\"/><EnterpriseUrl>https://acme.my.salesforce.com/services/Soap/c/59.0/00D5g000004XyZa</EnterpriseUrl><PartnerUrl>https://acme.my.salesforce.com/services/Soap/u/59.0/00D5g000004XyZa</PartnerUrl>{all}</notifications></soapenv:Body></soapenv:Envelope>"
    )
}

fn measure(what: &str, body: &str) {
    let mut times: Vec<Duration> = Vec::new();
    let mut answer = String::new();
    for _ in 0..20 {
        let started = Instant::now();
        let parsed = outbound::parse_within(body.as_bytes(), Some(Duration::from_secs(1)));
        times.push(started.elapsed());
        answer = match parsed {
            Ok(m) => format!("parsed, {} notifications", m.notifications.len()),
            Err(e) => format!("refused: {e}"),
        };
    }
    times.sort();
    println!(
        "{what} ({} bytes): median {:.1} ms, worst {:.1} ms; {answer}",
        body.len(),
        times[times.len() / 2].as_secs_f64() * 1000.0,
        times[times.len() - 1].as_secs_f64() * 1000.0,
    );
}

fn main() {
    for (what, body) in hostile_bodies() {
        measure(what, &body);
    }
    measure("a valid message of 100 notifications", &valid_message(100));
}
