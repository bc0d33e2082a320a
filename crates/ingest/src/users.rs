//! The CRMs' own user events: a change of the CRM's user object says whether the CRM user is
//! active. The event travels on like any other (it shows in the record trail); ingest also reads
//! that word from it, so that the provisioner can deactivate the CRM user's platform account at
//! once instead of at the directory's next look.
//!
//! | CRM | user object | field | inactive when |
//! |---|---|---|---|
//! | Salesforce (Outbound Message, Change Data Capture) | `User` | `IsActive` | false |
//! | Pipedrive (webhooks v2) | `user` | `active_flag` | false |
//! | Dataverse | `systemuser` | `isdisabled` | true |
//!
//! HubSpot sends no webhooks for its users (owners); its directory lookups tell instead.

use chrono::{DateTime, Utc};
use crm_sync_proto::v1::{ChangeType, CrmEvent, field_value};

use crate::check::Refusal;

/// Where a CRM's user events say whether the user is active.
struct UserObject {
    crm: &'static str,
    object: &'static str,
    field: &'static str,
    /// The field is `isdisabled`-like: true means inactive.
    negated: bool,
}

const USER_OBJECTS: [UserObject; 3] = [
    UserObject {
        crm: "salesforce",
        object: "User",
        field: "IsActive",
        negated: false,
    },
    UserObject {
        crm: "pipedrive",
        object: "user",
        field: "active_flag",
        negated: false,
    },
    UserObject {
        crm: "dynamics",
        object: "systemuser",
        field: "isdisabled",
        negated: true,
    },
];

/// What one user event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserStatus {
    pub crm_user_id: String,
    pub active: bool,
    /// When the CRM made the change (else when it reached us).
    pub at: DateTime<Utc>,
}

/// What the events of an integration of `crm` say about CRM users being active, in event order.
/// Events of other objects, deletes, and user events that do not carry the field say nothing.
/// A user event whose field is neither true nor false is refused, naming the field: accepted,
/// its word would be lost without anyone knowing.
pub fn statuses(crm: &str, events: &[CrmEvent]) -> Result<Vec<UserStatus>, Refusal> {
    let Some(user) = USER_OBJECTS.iter().find(|u| u.crm == crm) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for event in events {
        if event.object_type != user.object || event.change_type == ChangeType::Deleted as i32 {
            continue;
        }
        let Some(value) = event.fields.get(user.field) else {
            continue;
        };
        let flag = match &value.kind {
            Some(field_value::Kind::Boolean(b)) => Some(*b),
            Some(field_value::Kind::Text(t)) => match t.trim().to_ascii_lowercase().as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            _ => None,
        };
        let Some(flag) = flag else {
            return Err(Refusal::Invalid {
                record: None,
                field: format!("fields.{}", user.field),
                reason: format!(
                    "{} {} says whether the CRM user is active and must be true or false",
                    user.object, event.record_id
                ),
            });
        };
        let at = event
            .occurred_at
            .as_ref()
            .or(event.received_at.as_ref())
            .and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
            .unwrap_or_else(Utc::now);
        out.push(UserStatus {
            crm_user_id: event.record_id.clone(),
            active: flag != user.negated,
            at,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crm_sync_proto::v1::FieldValue;

    use super::*;
    use crate::event::{text, timestamp};

    fn user_event(object: &str, id: &str, field: &str, value: FieldValue) -> CrmEvent {
        CrmEvent {
            object_type: object.into(),
            record_id: id.into(),
            change_type: ChangeType::Updated as i32,
            fields: [(field.to_owned(), value)].into(),
            occurred_at: Some(timestamp(
                DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            )),
            ..CrmEvent::default()
        }
    }

    fn boolean(b: bool) -> FieldValue {
        FieldValue {
            kind: Some(field_value::Kind::Boolean(b)),
        }
    }

    #[test]
    fn each_crm_names_its_user_object_and_field() {
        let said = |crm, event| statuses(crm, &[event]).unwrap();
        let sf = said(
            "salesforce",
            user_event("User", "005A", "IsActive", text("false")),
        );
        assert_eq!(
            sf,
            [UserStatus {
                crm_user_id: "005A".into(),
                active: false,
                at: DateTime::from_timestamp(1_800_000_000, 0).unwrap()
            }]
        );
        assert!(
            said(
                "pipedrive",
                user_event("user", "7", "active_flag", boolean(true))
            )[0]
            .active
        );
        let disabled = said(
            "dynamics",
            user_event("systemuser", "a-guid", "isdisabled", boolean(true)),
        );
        assert!(!disabled[0].active, "isdisabled true is inactive");
        // Another object, another CRM's user object, HubSpot, or no field: nothing said.
        assert!(
            said(
                "salesforce",
                user_event("Opportunity", "006", "IsActive", boolean(false))
            )
            .is_empty()
        );
        assert!(
            said(
                "salesforce",
                user_event("user", "7", "active_flag", boolean(false))
            )
            .is_empty()
        );
        assert!(
            said(
                "hubspot",
                user_event("User", "1", "IsActive", boolean(false))
            )
            .is_empty()
        );
        assert!(
            said(
                "salesforce",
                user_event("User", "005A", "Email", text("x@y.z"))
            )
            .is_empty()
        );
        let mut deleted = user_event("User", "005A", "IsActive", boolean(false));
        deleted.change_type = ChangeType::Deleted as i32;
        assert!(said("salesforce", deleted).is_empty());
    }

    #[test]
    fn a_user_field_that_is_not_a_boolean_is_refused_naming_it() {
        let refused = statuses(
            "pipedrive",
            &[user_event("user", "7", "active_flag", text("maybe"))],
        )
        .unwrap_err();
        assert!(
            refused.to_string().contains("fields.active_flag"),
            "{refused}"
        );
    }
}
