//! Case-insensitive text comparison.

use std::borrow::Cow;

use caseless::Caseless;
use unicode_normalization::UnicodeNormalization;

/// Full Unicode case folding after canonical decomposition; ASCII takes the cheap path.
pub(super) fn fold(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(text.to_ascii_lowercase())
        } else {
            Cow::Borrowed(text)
        }
    } else {
        Cow::Owned(text.chars().nfd().default_case_fold().nfd().collect())
    }
}

pub(super) fn equals_folded(actual: &str, folded: &str) -> bool {
    if actual.is_ascii() && folded.is_ascii() {
        actual.eq_ignore_ascii_case(folded)
    } else {
        fold(actual) == folded
    }
}

pub(super) fn contains_folded(actual: &str, folded: &str, at_start: bool) -> bool {
    if actual.is_ascii() && folded.is_ascii() {
        let (hay, needle) = (actual.as_bytes(), folded.as_bytes());
        if needle.len() > hay.len() {
            return false;
        }
        if at_start {
            return hay[..needle.len()].eq_ignore_ascii_case(needle);
        }
        hay.windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle))
    } else {
        let actual = fold(actual);
        if at_start {
            actual.starts_with(folded)
        } else {
            actual.contains(folded)
        }
    }
}
