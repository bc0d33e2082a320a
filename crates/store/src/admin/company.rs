//! A company's own settings: its time zone, in which dates of periods (leaderboards, activity
//! lists) start and end, and after how long without webhooks an integration shows red.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CompanySettings {
    pub time_zone: String,
    pub silence_alert_minutes: i32,
}

pub async fn get<'e>(
    db: impl PgExecutor<'e>,
    company_id: Uuid,
) -> Result<Option<CompanySettings>, sqlx::Error> {
    sqlx::query_as("SELECT time_zone, silence_alert_minutes FROM companies WHERE id = $1")
        .bind(company_id)
        .fetch_optional(db)
        .await
}

/// Whether PostgreSQL knows the IANA time zone `name` (the same table converts dates later).
pub async fn is_time_zone<'e>(db: impl PgExecutor<'e>, name: &str) -> Result<bool, sqlx::Error> {
    let (known,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1)")
            .bind(name)
            .fetch_one(db)
            .await?;
    Ok(known)
}

/// Sets the settings given (`None` keeps one); the settings before and after, or `None` for no
/// such company.
pub async fn update(
    conn: &mut PgConnection,
    company_id: Uuid,
    time_zone: Option<&str>,
    silence_alert_minutes: Option<i32>,
) -> Result<Option<(CompanySettings, CompanySettings)>, sqlx::Error> {
    let row: Option<(String, i32, String, i32)> = sqlx::query_as(
        "UPDATE companies c SET time_zone = coalesce($2, c.time_zone),
                silence_alert_minutes = coalesce($3, c.silence_alert_minutes)
         FROM companies old
         WHERE c.id = $1 AND old.id = c.id
         RETURNING old.time_zone, old.silence_alert_minutes, c.time_zone, c.silence_alert_minutes",
    )
    .bind(company_id)
    .bind(time_zone)
    .bind(silence_alert_minutes)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(tz0, s0, tz1, s1)| {
        (
            CompanySettings {
                time_zone: tz0,
                silence_alert_minutes: s0,
            },
            CompanySettings {
                time_zone: tz1,
                silence_alert_minutes: s1,
            },
        )
    }))
}

/// The instants at which the given calendar dates begin in the company's time zone. A date is
/// passed as that day's UTC midnight (as the API parses it) and comes back as the company's
/// midnight of the same day; `None` stays `None`.
pub async fn local_midnights<'e>(
    db: impl PgExecutor<'e>,
    company_id: Uuid,
    dates: [Option<DateTime<Utc>>; 2],
) -> Result<[Option<DateTime<Utc>>; 2], sqlx::Error> {
    type Bounds = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);
    let row: Option<Bounds> = sqlx::query_as(
        "SELECT ($2::timestamptz AT TIME ZONE 'UTC') AT TIME ZONE c.time_zone,
                ($3::timestamptz AT TIME ZONE 'UTC') AT TIME ZONE c.time_zone
         FROM companies c WHERE c.id = $1",
    )
    .bind(company_id)
    .bind(dates[0])
    .bind(dates[1])
    .fetch_optional(db)
    .await?;
    Ok(row.map_or(dates, |(a, b)| [a, b]))
}
