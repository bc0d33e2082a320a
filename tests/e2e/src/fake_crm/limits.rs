//! Each CRM's answers when a rate limit is reached: its status, headers and body.

use super::Scripted;

/// A rate limit a fake CRM can be told to answer the next request with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// HubSpot: the account's daily allowance is spent (429, `policyName: DAILY`).
    HubSpotDaily,
    /// Pipedrive: the token's window is full (429); `x-ratelimit-reset` says in how many
    /// seconds it resets. The company's POST/PUT allowance is spent too (by other apps):
    /// `x-daily-requests-left: 0`, which says nothing about GETs.
    PipedriveWindow { reset_secs: u64 },
    /// Pipedrive: the company's daily token budget is spent (429 while the 2-second window has
    /// requests left, saying so).
    PipedriveDaily,
    /// Dataverse service protection: too many requests in its 5-minute window (429 with
    /// `Retry-After`).
    DataverseRequests { retry_after_secs: u64 },
    /// Salesforce: the org's API requests of the last 24 hours are used up (403).
    SalesforceTotalRequests,
    /// Salesforce: too many long-running requests at once (403, the same error code).
    SalesforceConcurrent,
}

impl RateLimit {
    pub(super) fn answer(self) -> Scripted {
        let headers = |pairs: &[(&str, String)]| {
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.clone()))
                .collect()
        };
        let (status, retry_after, headers, body) = match self {
            RateLimit::HubSpotDaily => (
                429,
                None,
                headers(&[
                    ("x-hubspot-ratelimit-daily", "250000".into()),
                    ("x-hubspot-ratelimit-daily-remaining", "0".into()),
                ]),
                r#"{"status":"error","message":"You have reached your daily limit.","errorType":"RATE_LIMIT","correlationId":"c0ffee","policyName":"DAILY"}"#.to_owned(),
            ),
            RateLimit::PipedriveWindow { reset_secs } => (
                429,
                None,
                headers(&[
                    ("x-ratelimit-limit", "40".into()),
                    ("x-ratelimit-remaining", "0".into()),
                    ("x-ratelimit-reset", reset_secs.to_string()),
                    ("x-daily-requests-left", "0".into()),
                ]),
                r#"{"success":false,"error":"Request over limit","errorCode":429,"error_info":"Please check developers.pipedrive.com for more information about Pipedrive API."}"#.to_owned(),
            ),
            RateLimit::PipedriveDaily => (
                429,
                None,
                headers(&[
                    ("x-ratelimit-limit", "40".into()),
                    ("x-ratelimit-remaining", "39".into()),
                    ("x-ratelimit-reset", "2".into()),
                ]),
                r#"{"success":false,"error":"Daily token budget exceeded","errorCode":429,"error_info":"Please check developers.pipedrive.com for more information about Pipedrive API."}"#.to_owned(),
            ),
            RateLimit::DataverseRequests { retry_after_secs } => (
                429,
                Some(retry_after_secs),
                Vec::new(),
                r#"{"error":{"code":"0x80072322","message":"Number of requests exceeded the limit of 6000 over time window of 300 seconds."}}"#.to_owned(),
            ),
            RateLimit::SalesforceTotalRequests => (
                403,
                None,
                Vec::new(),
                r#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#.to_owned(),
            ),
            RateLimit::SalesforceConcurrent => (
                403,
                None,
                Vec::new(),
                r#"[{"message":"ConcurrentPerOrgLongTxn Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#.to_owned(),
            ),
        };
        Scripted {
            status,
            retry_after,
            headers,
            body,
        }
    }
}
