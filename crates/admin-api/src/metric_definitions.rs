//! The metrics admin-api records, each named once with the description `/metrics` gives it.

use metrics::describe_counter;

/// Requests refused before reaching a route, by status (401, 403, 429).
pub const REFUSED: &str = "crm_sync_admin_refused_total";
/// Visibility changes (activities hidden or shown again) published.
pub const VISIBILITY_CHANGES_PUBLISHED: &str = "crm_sync_admin_visibility_changes_published_total";

pub const ALL: &[&str] = &[REFUSED, VISIBILITY_CHANGES_PUBLISHED];

/// Describes admin-api's metrics to the installed recorder.
pub fn describe() {
    describe_counter!(
        REFUSED,
        "Admin API requests refused by authentication or authorization, by status"
    );
    describe_counter!(
        VISIBILITY_CHANGES_PUBLISHED,
        "Activity changes published because an admin changed what counts (a user deactivated, an activity hidden)"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_is_described() {
        let missing =
            crm_sync_runtime::metric_definitions::undescribed(super::ALL, super::describe);
        assert_eq!(missing, Vec::<String>::new());
    }
}
