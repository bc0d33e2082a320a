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

/// `text` without leading and trailing white space. Field values rarely have any: when both
/// ends are visible ASCII, nothing is searched (`str::trim` walked both ends char by char, 2 %
/// of the evaluator's time).
pub(crate) fn trimmed(text: &str) -> &str {
    let visible = |b: Option<&u8>| b.is_some_and(u8::is_ascii_graphic);
    let bytes = text.as_bytes();
    if visible(bytes.first()) && visible(bytes.last()) {
        text
    } else {
        text.trim()
    }
}

/// Empty or only white space.
pub(crate) fn is_blank(text: &str) -> bool {
    trimmed(text).is_empty()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_takes_the_short_path_only_when_it_gives_what_trim_gives() {
        for text in [
            "",
            " ",
            "\t\n",
            "x",
            "a b",
            " x",
            "x ",
            "\u{a0}",
            "é",
            " é ",
            "\u{2003}x\u{2003}",
        ] {
            assert_eq!(trimmed(text), text.trim(), "{text:?}");
            assert_eq!(is_blank(text), text.trim().is_empty(), "{text:?}");
        }
    }
}
