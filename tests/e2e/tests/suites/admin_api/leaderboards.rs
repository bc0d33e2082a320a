//! Reading what counted: leaderboards and lists, by period and team, paginated.

use super::*;

#[tokio::test]
async fn leaderboards_and_lists_filter_by_period_and_team_and_paginate() {
    let env = TestEnv::new("admin-leaderboard").await;
    let tenant = Tenant::create(&env.pool, "acme", true, true).await;
    let admin = token(&env, tenant.company_id, "admin").await;
    let api = start_admin_api(&env).await;
    let c = AdminClient::new(&api, Some(&admin));
    let p = |rest: &str| company_path(tenant.company_id, rest);

    let east = c
        .post(&p("/teams"), json!({"name": "East"}))
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let west = c
        .post(&p("/teams"), json!({"name": "West"}))
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut users = Vec::new();
    for i in 0..7 {
        let user = seed_pending_user(
            &env,
            &tenant,
            &format!("Rep {i}"),
            &format!("005REP{i}"),
            &[&format!("{}", 100 * (i + 1))],
        )
        .await;
        // One November activity each above, plus an October one worth a lot.
        seed_activities(
            &env,
            &tenant,
            &format!("005REP{i}"),
            Some(user),
            &["10000"],
            "2026-10-15",
        )
        .await;
        let team = if i % 2 == 0 { &east } else { &west };
        if i < 6 {
            c.put(&p(&format!("/teams/{team}/members/{user}")))
                .await
                .expect(200);
        }
        users.push(user);
    }

    let november = c
        .all(
            &p("/leaderboard?activity_type=deal_won&from=2026-11-01&to=2026-11-30"),
            2,
        )
        .await;
    let totals: Vec<(&str, &str, i64)> = november
        .iter()
        .map(|e| {
            (
                e["display_name"].as_str().unwrap(),
                e["total"].as_str().unwrap(),
                e["rank"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        totals,
        [
            ("Rep 5", "600", 1),
            ("Rep 4", "500", 2),
            ("Rep 3", "400", 3),
            ("Rep 2", "300", 4),
            ("Rep 1", "200", 5),
            ("Rep 0", "100", 6)
        ],
        "Rep 6 is on no team and does not count"
    );
    // `to` as a date includes that day; as a date-time it is exclusive.
    let on_day = c
        .get(&p(
            "/leaderboard?activity_type=deal_won&from=2026-11-20&to=2026-11-20",
        ))
        .await
        .expect(200);
    assert_eq!(on_day["items"].as_array().unwrap().len(), 6);
    let before = c
        .get(&p(
            "/leaderboard?activity_type=deal_won&from=2026-11-01&to=2026-11-20T00:00:00Z",
        ))
        .await
        .expect(200);
    assert_eq!(before["items"], json!([]));
    let all_time = c
        .get(&p(&format!(
            "/leaderboard?activity_type=deal_won&team_id={west}"
        )))
        .await
        .expect(200);
    let west_names: Vec<&str> = all_time["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["display_name"].as_str().unwrap())
        .collect();
    assert_eq!(west_names, ["Rep 5", "Rep 3", "Rep 1"]);
    assert_eq!(all_time["items"][0]["total"], "10600");
    assert_eq!(all_time["items"][0]["count"], 2);
    assert_eq!(all_time["items"][0]["teams"], json!(["West"]));

    c.get(&p("/leaderboard")).await.invalid("activity_type");
    c.get(&p("/leaderboard?activity_type=deal_won&from=yesterday"))
        .await
        .invalid("from");
    c.get(&p(
        "/leaderboard?activity_type=deal_won&from=2026-11-02&to=2026-11-01",
    ))
    .await
    .invalid("to");
    c.get(&p(&format!(
        "/leaderboard?activity_type=deal_won&team_id={}",
        Uuid::new_v4()
    )))
    .await
    .invalid("team_id");

    // Every list pages with limit/cursor, sanely bounded.
    let activities = c.all(&p("/activities"), 3).await;
    assert_eq!(activities.len(), 14);
    let ids: HashSet<&str> = activities
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 14, "pages neither overlap nor skip");
    assert_eq!(c.all(&p("/users"), 2).await.len(), 7);
    assert_eq!(c.all(&p("/teams"), 1).await.len(), 2);
    assert_eq!(c.all(&p("/crm-identities"), 4).await.len(), 7);
    assert_eq!(c.all(&p("/integrations"), 1).await.len(), 1);
    assert_eq!(c.all(&p("/workflows"), 1).await.len(), 1);
    assert!(c.all(&p("/audit-log"), 4).await.len() >= 8);
    let october = c
        .get(&p(
            "/activities?from=2026-10-01&to=2026-10-31&state=recorded",
        ))
        .await
        .expect(200);
    assert_eq!(october["items"].as_array().unwrap().len(), 7);
    for list in [
        "/activities",
        "/users",
        "/teams",
        "/integrations",
        "/workflows",
        "/audit-log",
        "/crm-identities",
        "/leaderboard?activity_type=x",
    ] {
        let sep = if list.contains('?') { '&' } else { '?' };
        c.get(&p(&format!("{list}{sep}limit=201")))
            .await
            .invalid("limit");
        c.get(&p(&format!("{list}{sep}limit=0")))
            .await
            .invalid("limit");
        c.get(&p(&format!("{list}{sep}cursor=nonsense")))
            .await
            .invalid("cursor");
    }
    let max = c.get(&p("/activities?limit=200")).await.expect(200);
    assert_eq!(max["items"].as_array().unwrap().len(), 14);
    assert!(max["next_cursor"].is_null());
    let _ = users;
}
