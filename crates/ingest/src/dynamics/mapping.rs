//! From a `RemoteExecutionContext` to `CrmEvent`s, by `MessageName`:
//!
//! | message | event |
//! |---|---|
//! | `Create`, `Restore` | CREATED: the Target's attributes (the post image fills in the rest) |
//! | `Update` | UPDATED: the post image overlaid with the Target's (changed) attributes; the pre image's values of the changed attributes are `previous_fields` |
//! | `Delete` | DELETED: no fields; the pre image (if registered) is `previous_fields` and names the owner |
//! | `Assign` | UPDATED: `ownerid` set to the Assignee |
//! | `SetState`, `SetStateDynamicEntity` | UPDATED: `statecode` / `statuscode` |
//! | `Merge` | UPDATED for the Target, DELETED for the `SubordinateId` merged into it |
//!
//! Fields keep Dataverse's logical names; choice labels Dataverse sends in `FormattedValues` are
//! added as `<name>@OData.Community.Display.V1.FormattedValue`, as the Web API names them. The
//! owner is the `ownerid` lookup. When Dataverse strips the context because it exceeded 256 KB
//! (`x-ms-dynamics-msg-size-exceeded`), the event names only the record, and says so
//! (`fields_omitted`, set by the webhook handler that sees the header).
//!
//! The delivery id is the context's `OperationId` (the asynchronous operation, the same on every
//! retry), else its `RequestId`, else its `CorrelationId`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use crm_sync_proto::v1::{ChangeType, CrmEvent, CrmKind, CrmUser, FieldValue};
use serde_json::Value;
use uuid::Uuid;

use super::context::{self, Context, Entity, field, guid, reference_id, reference_name};
use crate::event::{self, event_id, timestamp};

pub const OWNER_ATTRIBUTE: &str = "ownerid";
pub const FORMATTED_SUFFIX: &str = "@OData.Community.Display.V1.FormattedValue";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error(
        "MessageName {0:?} is not supported; register the webhook step for Create, Update, Delete, Assign, SetState, Merge or Restore"
    )]
    UnsupportedMessage(String),
    #[error("the context has no OperationId, RequestId or CorrelationId to identify the delivery")]
    NoDeliveryId,
    #[error("the context names no record (no Target and no PrimaryEntityId)")]
    NoRecord,
    #[error("{0}")]
    Shape(String),
}

fn input<'a>(ctx: &'a Context, name: &str) -> Option<&'a Value> {
    ctx.input
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

fn target(ctx: &Context, name: &str) -> Result<Option<Entity>, MappingError> {
    input(ctx, name)
        .map(|v| context::entity(v, &format!("InputParameters[{name}]")))
        .transpose()
        .map_err(|e| MappingError::Shape(e.to_string()))
}

fn attributes(entity: &Entity) -> Vec<(String, FieldValue)> {
    let mut out: Vec<(String, FieldValue)> = entity
        .attributes
        .iter()
        .map(|(name, value)| (name.clone(), field(value)))
        .collect();
    out.extend(entity.formatted.iter().map(|(name, label)| {
        (
            format!("{name}{FORMATTED_SUFFIX}"),
            event::text(label.clone()),
        )
    }));
    out
}

fn owner_of(entities: &[&Entity]) -> Option<CrmUser> {
    entities.iter().find_map(|e| {
        e.attributes
            .iter()
            .find(|(name, _)| name == OWNER_ATTRIBUTE)
            .and_then(|(_, v)| owner_reference(v))
    })
}

/// The user a lookup points at, named when the context carries the name (so that an account
/// created for them is named without a directory look-up).
fn owner_reference(value: &serde_json::Value) -> Option<CrmUser> {
    reference_id(value).map(|id| CrmUser {
        crm_user_id: id,
        name: reference_name(value).unwrap_or_default(),
        ..CrmUser::default()
    })
}

struct Draft {
    record_id: String,
    change: ChangeType,
    fields: BTreeMap<String, FieldValue>,
    previous: BTreeMap<String, FieldValue>,
    owner: Option<CrmUser>,
}

pub fn to_events(
    integration_id: Uuid,
    ctx: &Context,
    now: DateTime<Utc>,
) -> Result<Vec<CrmEvent>, MappingError> {
    let delivery = ctx
        .operation_id
        .as_ref()
        .or(ctx.request_id.as_ref())
        .or(ctx.correlation_id.as_ref())
        .ok_or(MappingError::NoDeliveryId)?
        .clone();
    let images = Images::new(ctx);
    let drafts = match ctx.message_name.as_str() {
        "Create" | "Restore" => vec![images.created()?],
        "Update" => vec![images.updated()?],
        "Delete" => vec![images.deleted()?],
        "Assign" => vec![images.assigned()?],
        "SetState" | "SetStateDynamicEntity" => vec![images.state_set()?],
        "Merge" => images.merge()?,
        other => return Err(MappingError::UnsupportedMessage(other.to_owned())),
    };
    let occurred_at = ctx.operation_created_on.unwrap_or(now);
    Ok(drafts
        .into_iter()
        .map(|d| CrmEvent {
            event_id: event_id(
                "dynamics",
                integration_id,
                &[&delivery, &ctx.message_name, &d.record_id],
            )
            .to_string(),
            integration_id: integration_id.to_string(),
            crm: CrmKind::Dynamics as i32,
            object_type: ctx.primary_entity_name.clone(),
            record_id: d.record_id,
            change_type: d.change as i32,
            fields: d.fields,
            previous_fields: d.previous,
            owner: d.owner,
            occurred_at: Some(timestamp(occurred_at)),
            received_at: Some(timestamp(now)),
            source_delivery_id: delivery.clone(),
            crm_account_id: ctx.organization_id.clone(),
            source_change_type: ctx.message_name.clone(),
            full_snapshot: false,
            fields_omitted: false,
        })
        .collect())
}

/// A message's record images (before and after the operation), and what each kind of message
/// makes of them.
struct Images<'a> {
    ctx: &'a Context,
    post: Vec<&'a Entity>,
    pre: Vec<&'a Entity>,
}

/// Attributes of several images, the first image's value winning.
fn merged(images: &[&Entity]) -> BTreeMap<String, FieldValue> {
    images.iter().rev().flat_map(|e| attributes(e)).collect()
}

impl<'a> Images<'a> {
    fn new(ctx: &'a Context) -> Images<'a> {
        Images {
            ctx,
            post: ctx.post_images.iter().collect(),
            pre: ctx.pre_images.iter().collect(),
        }
    }

    fn record_of(&self, target: &Option<Entity>) -> Result<String, MappingError> {
        target
            .as_ref()
            .and_then(|t| t.id.clone())
            .or_else(|| self.ctx.primary_entity_id.clone())
            .ok_or(MappingError::NoRecord)
    }

    fn created(&self) -> Result<Draft, MappingError> {
        let t = target(self.ctx, "Target")?;
        let mut fields = merged(&self.post);
        if let Some(t) = &t {
            fields.extend(attributes(t));
        }
        let mut owners: Vec<&Entity> = t.iter().collect();
        owners.extend(self.post.iter().copied());
        Ok(Draft {
            record_id: self.record_of(&t)?,
            change: ChangeType::Created,
            fields,
            previous: BTreeMap::new(),
            owner: owner_of(&owners),
        })
    }

    /// The target holds what changed; the previous values are the pre-image's of those fields.
    fn updated(&self) -> Result<Draft, MappingError> {
        let t = target(self.ctx, "Target")?;
        let mut fields = merged(&self.post);
        let changed: Vec<(String, FieldValue)> = t.as_ref().map(attributes).unwrap_or_default();
        let before = merged(&self.pre);
        let previous: BTreeMap<String, FieldValue> = if changed.is_empty() {
            before
        } else {
            changed
                .iter()
                .filter_map(|(name, _)| before.get(name).map(|v| (name.clone(), v.clone())))
                .collect()
        };
        fields.extend(changed);
        let mut owners: Vec<&Entity> = t.iter().collect();
        owners.extend(self.post.iter().copied());
        owners.extend(self.pre.iter().copied());
        Ok(Draft {
            record_id: self.record_of(&t)?,
            change: ChangeType::Updated,
            fields,
            previous,
            owner: owner_of(&owners),
        })
    }

    fn deleted(&self) -> Result<Draft, MappingError> {
        let t = target(self.ctx, "Target")?;
        Ok(Draft {
            record_id: self.record_of(&t)?,
            change: ChangeType::Deleted,
            fields: BTreeMap::new(),
            previous: merged(&self.pre),
            owner: owner_of(&self.pre),
        })
    }

    /// A new owner, named by the `Assignee` input.
    fn assigned(&self) -> Result<Draft, MappingError> {
        let t = target(self.ctx, "Target")?;
        let assignee = input(self.ctx, "Assignee").and_then(owner_reference);
        let mut fields = merged(&self.post);
        if let Some(owner) = &assignee {
            fields.insert(
                OWNER_ATTRIBUTE.to_owned(),
                event::text(owner.crm_user_id.clone()),
            );
        }
        Ok(Draft {
            record_id: self.record_of(&t)?,
            change: ChangeType::Updated,
            fields,
            previous: merged(&self.pre)
                .into_iter()
                .filter(|(name, _)| name == OWNER_ATTRIBUTE)
                .collect(),
            owner: assignee,
        })
    }

    /// A new state and status, named by the `State` and `Status` inputs.
    fn state_set(&self) -> Result<Draft, MappingError> {
        let t = target(self.ctx, "EntityMoniker")?;
        let mut fields = merged(&self.post);
        for (input_name, attribute) in [("State", "statecode"), ("Status", "statuscode")] {
            if let Some(value) = input(self.ctx, input_name) {
                fields.insert(attribute.to_owned(), field(value));
            }
        }
        let mut owners: Vec<&Entity> = self.post.clone();
        owners.extend(self.pre.iter().copied());
        Ok(Draft {
            record_id: self.record_of(&t)?,
            change: ChangeType::Updated,
            fields,
            previous: BTreeMap::new(),
            owner: owner_of(&owners),
        })
    }

    /// The surviving record is updated; the subordinate one is gone.
    fn merge(&self) -> Result<Vec<Draft>, MappingError> {
        let t = target(self.ctx, "Target")?;
        let survivor = self.record_of(&t)?;
        let subordinate = input(self.ctx, "SubordinateId")
            .and_then(Value::as_str)
            .and_then(guid)
            .ok_or_else(|| MappingError::Shape("Merge without a SubordinateId".into()))?;
        Ok(vec![
            Draft {
                record_id: survivor,
                change: ChangeType::Updated,
                fields: merged(&self.post),
                previous: BTreeMap::new(),
                owner: owner_of(&self.post),
            },
            Draft {
                record_id: subordinate,
                change: ChangeType::Deleted,
                fields: BTreeMap::new(),
                previous: BTreeMap::new(),
                owner: None,
            },
        ])
    }
}

#[cfg(test)]
mod tests {
    use crm_sync_proto::v1::field_value::Kind;

    use super::*;
    use crate::dynamics::context::parse;

    /// The Update example of Microsoft's "Use webhooks" documentation (a contact).
    const DOC_UPDATE: &str = include_str!("testdata/docs-contact-update.json");
    /// An opportunity won, with pre and post images registered.
    const OPPORTUNITY_WON: &str = include_str!("testdata/opportunity-update-images.json");
    /// An opportunity deleted, with a pre image.
    const OPPORTUNITY_DELETE: &str = include_str!("testdata/opportunity-delete.json");

    fn now() -> DateTime<Utc> {
        event::parse_datetime("2026-12-01T00:00:00Z").unwrap()
    }

    fn kind(e: &CrmEvent, name: &str) -> Option<Kind> {
        e.fields.get(name).and_then(|f| f.kind.clone())
    }

    #[test]
    fn the_documented_update_maps_to_an_updated_contact() {
        let ctx = parse(DOC_UPDATE.as_bytes()).unwrap();
        let iid = Uuid::new_v4();
        let events = to_events(iid, &ctx, now()).unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.object_type, "contact");
        assert_eq!(e.record_id, "6edcb49a-7645-e711-8102-c4346bc4c8e8");
        assert_eq!(e.change_type, ChangeType::Updated as i32);
        assert_eq!(kind(e, "telephone1"), Some(Kind::Text("4257780002".into())));
        assert_eq!(
            kind(e, "modifiedon"),
            Some(Kind::Text("2017-05-26T14:55:53.000Z".into()))
        );
        assert_eq!(e.crm_account_id, "b2aeba71-d5c4-e711-8111-c4346bc4c8e8");
        assert_eq!(e.source_change_type, "Update");
        assert_eq!(e.occurred_at.as_ref().unwrap().seconds, 1_495_810_553);
        assert_eq!(
            e.event_id,
            event_id(
                "dynamics",
                iid,
                &[
                    "1fb7e8ae-0d61-4ac1-a2d0-bd05df3dbb43",
                    "Update",
                    "6edcb49a-7645-e711-8102-c4346bc4c8e8"
                ]
            )
            .to_string(),
            "without an OperationId or RequestId, the CorrelationId identifies the delivery"
        );
    }

    #[test]
    fn an_update_with_images_has_current_and_previous_values_and_the_owner() {
        let ctx = parse(OPPORTUNITY_WON.as_bytes()).unwrap();
        let e = &to_events(Uuid::nil(), &ctx, now()).unwrap()[0];
        assert_eq!(e.object_type, "opportunity");
        assert_eq!(kind(e, "statecode"), Some(Kind::Number("1".into())));
        assert_eq!(
            kind(e, "statecode@OData.Community.Display.V1.FormattedValue"),
            Some(Kind::Text("Won".into()))
        );
        assert_eq!(
            kind(e, "estimatedvalue"),
            Some(Kind::Number("1250.5".into()))
        );
        assert_eq!(
            kind(e, "name"),
            Some(Kind::Text("Acme - 200 licenses".into()))
        );
        assert_eq!(
            e.owner.as_ref().unwrap().crm_user_id,
            "7d577253-3ef0-4a0a-bb7f-8335c2596e70"
        );
        assert_eq!(
            e.owner.as_ref().unwrap().name,
            "",
            "Name: null names nobody"
        );
        assert_eq!(
            e.previous_fields
                .get("statecode")
                .and_then(|f| f.kind.clone()),
            Some(Kind::Number("0".into()))
        );
        assert!(
            !e.previous_fields.contains_key("name"),
            "only changed attributes"
        );
        assert_eq!(e.source_delivery_id, "a1f7a9a0-73c2-4d2c-9f3d-4d5e6f708192");
    }

    #[test]
    fn the_owners_name_the_context_carries_names_the_crm_user() {
        let named = OPPORTUNITY_WON.replace(
            "\"LogicalName\": \"systemuser\",\n              \"Name\": null",
            "\"LogicalName\": \"systemuser\",\n              \"Name\": \" Dana Dynamics \"",
        );
        assert_ne!(named, OPPORTUNITY_WON);
        let ctx = parse(named.as_bytes()).unwrap();
        let e = &to_events(Uuid::nil(), &ctx, now()).unwrap()[0];
        let owner = e.owner.as_ref().unwrap();
        assert_eq!(owner.crm_user_id, "7d577253-3ef0-4a0a-bb7f-8335c2596e70");
        assert_eq!(owner.name, "Dana Dynamics");
    }

    #[test]
    fn a_delete_names_its_owner_from_the_pre_image() {
        let ctx = parse(OPPORTUNITY_DELETE.as_bytes()).unwrap();
        let e = &to_events(Uuid::nil(), &ctx, now()).unwrap()[0];
        assert_eq!(e.change_type, ChangeType::Deleted as i32);
        assert!(e.fields.is_empty());
        assert_eq!(e.record_id, "0a3c5e7f-1b2d-4e6f-8a9b-0c1d2e3f4a5b");
        assert_eq!(
            e.owner.as_ref().unwrap().crm_user_id,
            "7d577253-3ef0-4a0a-bb7f-8335c2596e70"
        );
        assert!(e.previous_fields.contains_key("estimatedvalue"));
    }

    #[test]
    fn assign_merge_and_stripped_contexts() {
        let base = |message: &str, inputs: &str| {
            format!(
                r#"{{"MessageName": "{message}", "PrimaryEntityName": "opportunity", "PrimaryEntityId": "0a3c5e7f-1b2d-4e6f-8a9b-0c1d2e3f4a5b",
                   "OrganizationId": "B2AEBA71-D5C4-E711-8111-C4346BC4C8E8", "OperationId": "11111111-2222-3333-4444-555555555555",
                   "InputParameters": {inputs}, "PreEntityImages": [], "PostEntityImages": []}}"#
            )
        };
        let reference = |id: &str, table: &str| {
            format!(
                r#"{{"__type": "EntityReference:http:\/\/schemas.microsoft.com\/xrm\/2011\/Contracts", "Id": "{id}", "KeyAttributes": [], "LogicalName": "{table}", "Name": null, "RowVersion": null}}"#
            )
        };
        let assign = base(
            "Assign",
            &format!(
                r#"[{{"key": "Target", "value": {}}}, {{"key": "Assignee", "value": {}}}]"#,
                reference("0a3c5e7f-1b2d-4e6f-8a9b-0c1d2e3f4a5b", "opportunity"),
                reference("9c1b2a3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d", "systemuser")
            ),
        );
        let e = &to_events(Uuid::nil(), &parse(assign.as_bytes()).unwrap(), now()).unwrap()[0];
        assert_eq!(e.change_type, ChangeType::Updated as i32);
        assert_eq!(
            e.owner.as_ref().unwrap().crm_user_id,
            "9c1b2a3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"
        );
        assert_eq!(
            kind(e, "ownerid"),
            Some(Kind::Text("9c1b2a3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d".into()))
        );

        let merge = base(
            "Merge",
            &format!(
                r#"[{{"key": "Target", "value": {}}}, {{"key": "SubordinateId", "value": "F00DF00D-0000-4000-8000-000000000001"}}]"#,
                reference("0a3c5e7f-1b2d-4e6f-8a9b-0c1d2e3f4a5b", "opportunity")
            ),
        );
        let events = to_events(Uuid::nil(), &parse(merge.as_bytes()).unwrap(), now()).unwrap();
        let summary: Vec<(&str, i32)> = events
            .iter()
            .map(|e| (e.record_id.as_str(), e.change_type))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "0a3c5e7f-1b2d-4e6f-8a9b-0c1d2e3f4a5b",
                    ChangeType::Updated as i32
                ),
                (
                    "f00df00d-0000-4000-8000-000000000001",
                    ChangeType::Deleted as i32
                )
            ]
        );

        // Dataverse drops InputParameters and images from contexts over 256 KB.
        let stripped = base("Update", "[]");
        let e = &to_events(Uuid::nil(), &parse(stripped.as_bytes()).unwrap(), now()).unwrap()[0];
        assert_eq!(e.record_id, "0a3c5e7f-1b2d-4e6f-8a9b-0c1d2e3f4a5b");
        assert!(e.fields.is_empty());

        let retrieve = base("Retrieve", "[]");
        let err = to_events(Uuid::nil(), &parse(retrieve.as_bytes()).unwrap(), now()).unwrap_err();
        assert_eq!(err, MappingError::UnsupportedMessage("Retrieve".into()));
    }

    #[test]
    fn contexts_that_are_not_contexts_are_refused_with_the_reason() {
        for (body, expected) in [
            ("{", "not JSON"),
            ("[]", "not a JSON object"),
            (
                r#"{"PrimaryEntityName": "x", "OrganizationId": "b2aeba71-d5c4-e711-8111-c4346bc4c8e8"}"#,
                "MessageName is missing",
            ),
            (
                r#"{"MessageName": "Update", "PrimaryEntityName": "x", "OrganizationId": "nope"}"#,
                "OrganizationId is missing or not a GUID",
            ),
            (
                r#"{"MessageName": "Update", "PrimaryEntityName": "x", "OrganizationId": "b2aeba71-d5c4-e711-8111-c4346bc4c8e8", "InputParameters": {"Target": 1}}"#,
                "InputParameters is not a list",
            ),
            (
                r#"{"MessageName": "Update", "PrimaryEntityName": "x", "OrganizationId": "b2aeba71-d5c4-e711-8111-c4346bc4c8e8", "OperationCreatedOn": "yesterday"}"#,
                "is not a date",
            ),
        ] {
            let err = parse(body.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }
}
