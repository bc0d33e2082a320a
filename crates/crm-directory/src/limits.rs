//! What each CRM's rate-limit answer says about when it answers again.
//!
//! | CRM | answer | wait |
//! |---|---|---|
//! | HubSpot | 429 `policyName` `TEN_SECONDLY_ROLLING` / `SECONDLY` (no `Retry-After` as a rule) | the window: `X-HubSpot-RateLimit-Interval-Milliseconds`, else 10 s / 1 s |
//! | HubSpot | 429 `policyName` `DAILY` | until the account's day ends (see [`HUBSPOT_DAY_PROBE`]) |
//! | Pipedrive | 429 with `x-ratelimit-reset` (seconds until the window resets) | that |
//! | Pipedrive | 429 with the day's token budget spent (a message saying so, or the 2-second window not used up) | until midnight UTC |
//! | Salesforce | 403 `REQUEST_LIMIT_EXCEEDED` `TotalRequests Limit exceeded` (the org's rolling 24 hours) | an hour, while older requests age out |
//! | Salesforce | 403 `REQUEST_LIMIT_EXCEEDED` `ConcurrentPerOrgLongTxn` (too many long requests at once) | the client's backoff |
//! | any | 429 or 5xx with `Retry-After` (Dataverse's service protection) | `Retry-After` |
//!
//! A wait longer than a request may sleep (the client's `max_backoff`), and any daily
//! allowance spent, ends the request with [`LookupError::RateLimited`]: a pull job takes the
//! wait as its next attempt's time instead of retrying on its own schedule.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Deserialize;

use crate::{Crm, LookupError, api::Failure};

/// HubSpot's daily limit resets at midnight in the account's time zone, which the API does not
/// say: the next attempt is at the next hour's start, where the days of every whole-hour time
/// zone begin, so a new day's allowance is used from its first hour at the cost of one request
/// an hour meanwhile.
pub(crate) const HUBSPOT_DAY_PROBE: Duration = Duration::from_secs(3600);
/// Salesforce counts API requests over a rolling 24 hours: an hour lets the oldest age out.
const SALESFORCE_ROLLING_DAY_PROBE: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
/// Past a period's boundary, in case the CRM's clock is a little behind ours.
const MARGIN: Duration = Duration::from_secs(30);

/// A rate limit an answer reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limit {
    /// Which limit, in words.
    pub what: String,
    /// Until it allows requests again; `None`: unknown (the client's backoff).
    pub wait: Option<Duration>,
    /// A day's allowance is spent: no wait within a request can help.
    pub daily: bool,
}

impl Limit {
    /// The failure of the request that met the limit (`what` names the request).
    pub(crate) fn failure(self, what: &str) -> Failure {
        let message = format!("{what}: {}", self.what);
        match self.wait {
            Some(wait) if self.daily => Failure::Final(LookupError::RateLimited { message, wait }),
            retry_after => Failure::Retryable {
                message,
                retry_after,
            },
        }
    }
}

/// The rate limit a non-success answer reports, if it is one this module knows.
pub(crate) fn reached(
    crm: Crm,
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
) -> Option<Limit> {
    match crm {
        Crm::HubSpot if status == StatusCode::TOO_MANY_REQUESTS => Some(hubspot(headers, body)),
        Crm::Pipedrive if status == StatusCode::TOO_MANY_REQUESTS => Some(pipedrive(headers, body)),
        Crm::Salesforce if status == StatusCode::FORBIDDEN => salesforce(body),
        _ => None,
    }
}

fn hubspot(headers: &HeaderMap, body: &str) -> Limit {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct RateLimit {
        policy_name: Option<String>,
    }
    let policy = serde_json::from_str::<RateLimit>(body)
        .ok()
        .and_then(|l| l.policy_name)
        .unwrap_or_default();
    if policy == "DAILY" {
        return Limit {
            what: "the HubSpot account's daily API limit is reached (it resets at midnight in the account's time zone)".into(),
            wait: Some(until_next(HUBSPOT_DAY_PROBE)),
            daily: true,
        };
    }
    // Retrying inside a rolling window only meets the same limit: wait until it has passed.
    let window = retry_after(headers)
        .or_else(|| {
            number(headers, "x-hubspot-ratelimit-interval-milliseconds").map(Duration::from_millis)
        })
        .unwrap_or(match policy.as_str() {
            "SECONDLY" => Duration::from_secs(1),
            _ => Duration::from_secs(10),
        });
    let policy = if policy.is_empty() {
        "rate"
    } else {
        policy.as_str()
    };
    Limit {
        what: format!("the HubSpot app's {policy} limit is reached"),
        wait: Some(window),
        daily: false,
    }
}

fn pipedrive(headers: &HeaderMap, body: &str) -> Limit {
    let reset = retry_after(headers)
        .or_else(|| number(headers, "x-ratelimit-reset").map(Duration::from_secs));
    // Not `x-daily-requests-left`: it counts POST and PUT requests only, which pulls and lookups
    // never send; other apps of the company may have spent it while GETs still work. A refusal
    // while the 2-second window has requests left is the day's token budget.
    let lower = body.to_ascii_lowercase();
    let window_left = number(headers, "x-ratelimit-remaining").is_some_and(|n| n > 0);
    let spent = lower.contains("daily") || lower.contains("budget") || window_left;
    if spent {
        let midnight = until_next(DAY);
        return Limit {
            what:
                "the Pipedrive company's daily API allowance is spent (it resets at midnight UTC)"
                    .into(),
            wait: Some(reset.map_or(midnight, |r| r.max(midnight))),
            daily: true,
        };
    }
    Limit {
        what: "the Pipedrive token's rate limit is reached".into(),
        wait: reset,
        daily: false,
    }
}

fn salesforce(body: &str) -> Option<Limit> {
    if !body.contains("REQUEST_LIMIT_EXCEEDED") {
        return None;
    }
    // The same error code names the org's daily total and its limit on long requests at once.
    if body.contains("ConcurrentPerOrgLongTxn") {
        return Some(Limit {
            what: "the Salesforce org has too many long-running requests at once".into(),
            wait: None,
            daily: false,
        });
    }
    Some(Limit {
        what: "the Salesforce org's daily API request limit is reached (counted over the last 24 hours)".into(),
        wait: Some(SALESFORCE_ROLLING_DAY_PROBE),
        daily: true,
    })
}

/// `Retry-After` in seconds (HTTP dates are rare from APIs and are treated as absent).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    number(headers, RETRY_AFTER.as_str()).map(Duration::from_secs)
}

fn number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// From now to the next multiple of `period` since the Unix epoch (UTC), plus a margin.
fn until_next(period: Duration) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let period = period.as_secs().max(1);
    Duration::from_secs(period - now % period) + MARGIN
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, value.parse().unwrap());
        }
        h
    }

    const TOO_MANY: StatusCode = StatusCode::TOO_MANY_REQUESTS;

    #[test]
    fn retry_after_is_read_in_seconds() {
        assert_eq!(
            retry_after(&headers(&[("retry-after", "7")])),
            Some(Duration::from_secs(7))
        );
        let date = headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]);
        assert_eq!(retry_after(&date), None);
    }

    #[test]
    fn hubspot_rolling_windows_are_waited_out_whole() {
        let body =
            r#"{"status":"error","errorType":"RATE_LIMIT","policyName":"TEN_SECONDLY_ROLLING"}"#;
        let limit = reached(Crm::HubSpot, TOO_MANY, &HeaderMap::new(), body).unwrap();
        assert_eq!(
            (limit.wait, limit.daily),
            (Some(Duration::from_secs(10)), false)
        );
        let told = headers(&[("x-hubspot-ratelimit-interval-milliseconds", "2000")]);
        let limit = reached(Crm::HubSpot, TOO_MANY, &told, body).unwrap();
        assert_eq!(limit.wait, Some(Duration::from_secs(2)));
        let secondly = r#"{"policyName":"SECONDLY"}"#;
        let limit = reached(Crm::HubSpot, TOO_MANY, &HeaderMap::new(), secondly).unwrap();
        assert_eq!(limit.wait, Some(Duration::from_secs(1)));
    }

    #[test]
    fn hubspot_daily_limit_waits_for_the_next_hour() {
        let limit = reached(
            Crm::HubSpot,
            TOO_MANY,
            &HeaderMap::new(),
            r#"{"policyName":"DAILY"}"#,
        )
        .unwrap();
        let wait = limit.wait.unwrap();
        assert!(
            limit.daily && wait > MARGIN && wait <= HUBSPOT_DAY_PROBE + MARGIN,
            "{wait:?}"
        );
    }

    #[test]
    fn pipedrive_reset_and_daily_allowance() {
        let window = headers(&[("x-ratelimit-reset", "2"), ("x-ratelimit-remaining", "0")]);
        let limit = reached(Crm::Pipedrive, TOO_MANY, &window, "{}").unwrap();
        assert_eq!(
            (limit.wait, limit.daily),
            (Some(Duration::from_secs(2)), false)
        );
        // The POST/PUT allowance spent says nothing about a GET refused for the window.
        let writes_spent = headers(&[
            ("x-ratelimit-reset", "2"),
            ("x-ratelimit-remaining", "0"),
            ("x-daily-requests-left", "0"),
        ]);
        let limit = reached(Crm::Pipedrive, TOO_MANY, &writes_spent, "{}").unwrap();
        assert_eq!(
            (limit.wait, limit.daily),
            (Some(Duration::from_secs(2)), false)
        );
        let budget = r#"{"success":false,"error":"Daily token budget exceeded","errorCode":429}"#;
        let window_left = headers(&[("x-ratelimit-reset", "2"), ("x-ratelimit-remaining", "39")]);
        for (headers, body) in [(&window, budget), (&window_left, "{}")] {
            let limit = reached(Crm::Pipedrive, TOO_MANY, headers, body).unwrap();
            let wait = limit.wait.unwrap();
            assert!(
                limit.daily && wait > MARGIN && wait <= DAY + MARGIN,
                "{wait:?}"
            );
        }
    }

    #[test]
    fn salesforce_daily_total_and_concurrent_limit_differ() {
        let total =
            r#"[{"errorCode":"REQUEST_LIMIT_EXCEEDED","message":"TotalRequests Limit exceeded."}]"#;
        let limit = reached(
            Crm::Salesforce,
            StatusCode::FORBIDDEN,
            &HeaderMap::new(),
            total,
        )
        .unwrap();
        assert!(limit.daily && limit.wait == Some(SALESFORCE_ROLLING_DAY_PROBE));
        let concurrent = r#"[{"errorCode":"REQUEST_LIMIT_EXCEEDED","message":"ConcurrentPerOrgLongTxn Limit exceeded."}]"#;
        let limit = reached(
            Crm::Salesforce,
            StatusCode::FORBIDDEN,
            &HeaderMap::new(),
            concurrent,
        )
        .unwrap();
        assert!(!limit.daily && limit.wait.is_none());
        let refused = r#"[{"errorCode":"INSUFFICIENT_ACCESS","message":"no"}]"#;
        assert_eq!(
            reached(
                Crm::Salesforce,
                StatusCode::FORBIDDEN,
                &HeaderMap::new(),
                refused
            ),
            None
        );
    }
}
