//! The messages a consumer dead-letters, recorded under their integration so that admins see
//! them in the record trail and the page (the `.dlq` topic stays the operators' copy).

use crm_sync_kafka::dlq::DeadLetter;
use crm_sync_kafka::{Incoming, headers};

use super::NewDeadLetter;
use sqlx::PgPool;
use uuid::Uuid;

/// The dead letter of `message` as the trail keeps it; None when its key names no integration
/// (`{integration_id}/{object}/{record_id}`), since no admin could be shown it.
pub fn of(service: &str, message: &Incoming<'_>, letter: &DeadLetter) -> Option<NewDeadLetter> {
    let key = String::from_utf8_lossy(message.key?);
    let mut parts = key.splitn(3, '/');
    let integration_id = Uuid::parse_str(parts.next()?).ok()?;
    let object_type = parts.next()?.to_owned();
    let record_id = parts.next()?.to_owned();
    Some(NewDeadLetter {
        integration_id,
        object_type,
        record_id,
        event_id: headers::find(&message.headers, headers::EVENT_ID).map(str::to_owned),
        service: service.to_owned(),
        topic: message.topic.to_owned(),
        partition: message.partition,
        offset: message.offset,
        reason: letter.reason.to_owned(),
        detail: letter.detail.clone(),
    })
}

/// Records the dead letter; a failure is logged and otherwise ignored (the message still goes
/// to the `.dlq` topic, which is what must never be skipped).
pub async fn record(pool: &PgPool, service: &str, message: &Incoming<'_>, letter: &DeadLetter) {
    let Some(dead) = of(service, message, letter) else {
        return;
    };
    if let Err(error) = super::record_dead_letters(pool, std::slice::from_ref(&dead)).await {
        tracing::warn!(%error, "recording the dead letter in the record trail failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_integration_object_and_record() {
        let id = Uuid::new_v4();
        let key = format!("{id}/Opportunity/006/with/slashes");
        let message = Incoming {
            topic: "crm.matches.v1",
            partition: 2,
            offset: 7,
            key: Some(key.as_bytes()),
            payload: None,
            headers: vec![(headers::EVENT_ID.to_owned(), "e1".to_owned())],
        };
        let letter = DeadLetter {
            reason: "database_refused",
            detail: "out of range".into(),
        };
        let dead = of("provisioner", &message, &letter).unwrap();
        assert_eq!(dead.integration_id, id);
        assert_eq!(dead.object_type, "Opportunity");
        assert_eq!(dead.record_id, "006/with/slashes");
        assert_eq!(dead.event_id.as_deref(), Some("e1"));
        assert_eq!((dead.partition, dead.offset), (2, 7));

        let foreign = Incoming {
            key: Some(b"not-a-uuid/x/y".as_slice()),
            ..message
        };
        assert!(of("provisioner", &foreign, &letter).is_none());
    }
}
