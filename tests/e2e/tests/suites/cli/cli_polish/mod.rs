//! `crm-sync apply` leaves what a file omits as it is, and `crm-sync dlq` takes the positions
//! `dlq list` prints (a module of the cli suite).

use crm_sync_e2e::TestEnv;
use serde_json::{Value, json};

use super::{TENANTS, assert_success, crm_sync, text, write_file};

#[tokio::test(flavor = "multi_thread")]
async fn apply_keeps_settings_the_file_omits_and_says_so() {
    let env = TestEnv::new("cli-apply-omitted").await;
    let token = format!("tok-{}", uuid::Uuid::new_v4());
    let secrets = [("ACME_SF_TOKEN", token.as_str())];
    let file = write_file(&env, "tenants.yaml", TENANTS);
    let out = crm_sync(
        &env,
        &["apply", "-f", file.to_str().unwrap()],
        &secrets,
        None,
    )
    .await;
    assert_success("first apply", &out);

    // An admin turns auto-sync off in the page and activates the meetings workflow.
    sqlx::query("UPDATE integrations SET auto_sync_users = false")
        .execute(&env.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE workflows SET active = true WHERE name = 'Meetings'")
        .execute(&env.pool)
        .await
        .unwrap();

    // The next file omits auto_sync_users and the (still inactive by default) `active:` key.
    let omitting = TENANTS.replace("        auto_sync_users: true\n", "");
    let file = write_file(&env, "tenants-omitting.yaml", &omitting);
    let out = crm_sync(
        &env,
        &["apply", "-f", file.to_str().unwrap()],
        &secrets,
        None,
    )
    .await;
    assert_success("apply without the keys", &out);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("auto_sync_users: off (kept: not in the file)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("workflow Meetings (active, kept: not in the file)  unchanged"),
        "{stdout}"
    );
    assert!(
        stdout.contains("0 created, 0 updated, 6 unchanged"),
        "{stdout}"
    );
    let (auto_sync,): (bool,) = sqlx::query_as("SELECT auto_sync_users FROM integrations")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert!(!auto_sync, "apply overrode the admin's auto-sync setting");
    let (meetings_active,): (bool,) =
        sqlx::query_as("SELECT active FROM workflows WHERE name = 'Meetings'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert!(
        meetings_active,
        "apply deactivated a workflow the file does not set"
    );

    // A key the file does give still wins.
    let file = write_file(&env, "tenants-again.yaml", TENANTS);
    let out = crm_sync(
        &env,
        &["apply", "-f", file.to_str().unwrap()],
        &secrets,
        None,
    )
    .await;
    assert_success("apply with the key", &out);
    let (auto_sync,): (bool,) = sqlx::query_as("SELECT auto_sync_users FROM integrations")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert!(auto_sync);
}

#[tokio::test(flavor = "multi_thread")]
async fn dlq_inspect_and_replay_take_the_position_list_prints() {
    let env = TestEnv::new("cli-dlq-position").await;
    let event = json!({
        "event_id": format!("evt-{}", uuid::Uuid::new_v4()),
        "integration_id": uuid::Uuid::new_v4().to_string(),
        "crm": "CRM_KIND_SALESFORCE",
        "object_type": "Opportunity",
        "record_id": "0065g00000XyZ12AAB",
        "change_type": "CHANGE_TYPE_UPDATED",
    });
    let file = write_file(&env, "dead.jsonl", &format!("{event}\n"));
    let out = crm_sync(
        &env,
        &[
            "produce",
            "--topic",
            "events.dlq",
            "--file",
            file.to_str().unwrap(),
        ],
        &[],
        None,
    )
    .await;
    assert_success("produce to the dead-letter topic", &out);

    let out = crm_sync(&env, &["dlq", "list", "--topic", "events"], &[], None).await;
    assert_success("dlq list", &out);
    let stdout = text(&out.stdout);
    // The header, its rule, then the dead letters.
    let position = stdout
        .lines()
        .nth(2)
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_else(|| panic!("no dead letter listed:\n{stdout}"))
        .to_owned();
    assert!(position.contains('/'), "{stdout}");

    let out = crm_sync(
        &env,
        &["dlq", "inspect", "--topic", "events", &position],
        &[],
        None,
    )
    .await;
    assert_success("dlq inspect POSITION", &out);
    let inspected: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inspected["value"]["event_id"], event["event_id"]);

    let out = crm_sync(
        &env,
        &["dlq", "replay", "--topic", "events", &position, "--dry-run"],
        &[],
        None,
    )
    .await;
    assert_success("dlq replay POSITION --dry-run", &out);
    assert!(
        text(&out.stdout).contains(&format!("would replay {position} ->")),
        "{}",
        text(&out.stdout)
    );

    // A position or reason that matches no dead letter fails, naming what was asked for.
    for (args, says) in [
        (vec!["4/999999"], "no dead letter at 4/999999"),
        (
            vec!["--reason", "no_such_reason", "--dry-run"],
            "with reason no_such_reason",
        ),
    ] {
        let mut argv = vec!["dlq", "replay", "--topic", "events"];
        argv.extend(args);
        let out = crm_sync(&env, &argv, &[], None).await;
        assert!(!out.status.success(), "{argv:?} succeeded");
        assert!(
            text(&out.stderr).contains(says),
            "{argv:?}: {}",
            text(&out.stderr)
        );
    }
    // An offset without its partition is refused before Kafka is read.
    let out = crm_sync(
        &env,
        &["dlq", "replay", "--topic", "events", "--offset", "0"],
        &[],
        None,
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--partition"),
        "{}",
        text(&out.stderr)
    );

    // A malformed position is refused naming the expected form, before Kafka is read.
    let out = crm_sync(
        &env,
        &["dlq", "inspect", "--topic", "events", "4-0"],
        &[],
        None,
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("PARTITION/OFFSET"),
        "{}",
        text(&out.stderr)
    );
}
