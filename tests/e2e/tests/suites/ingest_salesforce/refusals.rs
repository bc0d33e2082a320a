//! Requests refused with a reason, and nothing of them published.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_say_why_and_publish_nothing() {
    let f = fixture("ingest-sf-refused").await;
    let ingest = f
        .env
        .start_service(
            "ingest",
            "ingest",
            &[("CRM_SYNC__INGEST__MAX_BODY_BYTES", "4096")],
        )
        .await;
    let iid = f.integration_id.to_string();
    let url = endpoint(&ingest, &iid, Some(&f.token));
    let one = &three_notifications()[..1];
    let valid = outbound_message(ORG, one);
    assert!(valid.len() < 4096);
    let xml = "text/xml; charset=utf-8";

    let truncated = valid[..valid.len() / 2].to_owned();
    let answer = post(&url, xml, truncated).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (400, "malformed_message")
    );

    let answer = post(&url, xml, outbound_message(ORG, &[])).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (400, "malformed_message")
    );
    assert!(
        answer.message().contains("no notifications"),
        "{}",
        answer.body
    );

    let without_record_id = valid.replace("<sf:Id>0065g00000XyZ12AAB</sf:Id>", "");
    let answer = post(&url, xml, without_record_id).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (400, "malformed_message")
    );
    assert_eq!(answer.message(), "notification 1 has no sObject Id");

    let answer = post(
        &endpoint(&ingest, &iid, Some("not-the-token")),
        xml,
        valid.clone(),
    )
    .await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (401, "unauthorized")
    );

    let answer = post(&endpoint(&ingest, &iid, None), xml, valid.clone()).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (401, "unauthorized")
    );

    for unknown in [
        Uuid::new_v4().to_string(),
        "not-a-uuid".to_owned(),
        f.hubspot_integration_id.to_string(),
    ] {
        let answer = post(
            &endpoint(&ingest, &unknown, Some(&f.token)),
            xml,
            valid.clone(),
        )
        .await;
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (404, "unknown_integration"),
            "{unknown}"
        );
    }

    let answer = post(&url, xml, outbound_message("00D000000000OTHER", one)).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (403, "foreign_organization")
    );

    let answer = post(&url, "application/json", valid.clone()).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (415, "unsupported_media_type")
    );

    let padded = valid.replace(
        "<SessionId",
        &format!("<!-- {} --><SessionId", "x".repeat(5000)),
    );
    let answer = post(&url, xml, padded).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (413, "payload_too_large")
    );

    assert_eq!(topic_message_count(&f.env.topics.events), 0);

    let metrics = reqwest::get(ingest.ops_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric_value(
            &metrics,
            "crm_sync_ingest_requests_total",
            &["outcome=\"invalid_token\""]
        ),
        Some(2.0),
        "{metrics}"
    );
    let log_file = ingest.log_file.clone();
    ingest.kill().await;
    let log = std::fs::read_to_string(log_file).unwrap();
    assert!(
        log.contains("foreign_organization"),
        "refusals are logged with their outcome"
    );
    assert!(
        !log.contains(&f.token) && !log.contains("not-the-token"),
        "tokens are never logged"
    );
}
