//! Salesforce record ids come in a case-sensitive 15-character form and a case-insensitive
//! 18-character form that appends a 3-character checksum of the letters' case. Webhooks and the
//! API carry the 18-character form, so ids an admin types are stored in it: otherwise mapping
//! `0055g00000QAOFF` would create a second identity beside `0055g00000QAOFFAA5`.

const CHECKSUM_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// The 18-character form of a 15-character id (15 letters and digits); any other id is returned
/// trimmed but otherwise as given (18-character ids already are in that form, and ids that are
/// not Salesforce's shape, as in tests and fakes, are not ours to refuse).
pub fn to_18(id: &str) -> String {
    let id = id.trim();
    if id.len() != 15 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return id.to_owned();
    }
    let checksum: String = id
        .as_bytes()
        .chunks(5)
        .map(|chunk| {
            let bits = chunk
                .iter()
                .enumerate()
                .filter(|(_, b)| b.is_ascii_uppercase())
                .fold(0usize, |acc, (i, _)| acc | (1 << i));
            char::from(CHECKSUM_ALPHABET[bits])
        })
        .collect();
    format!("{id}{checksum}")
}

#[cfg(test)]
mod tests {
    use super::to_18;

    #[test]
    fn fifteen_characters_gain_the_checksum_of_their_case() {
        // Salesforce's documented example.
        assert_eq!(to_18("001A000000UvhG3"), "001A000000UvhG3IAJ");
        assert_eq!(to_18("0055g00000QAOFF"), "0055g00000QAOFFAA5");
        assert_eq!(to_18(" 0055g00000QAOFF "), "0055g00000QAOFFAA5");
    }

    #[test]
    fn other_ids_are_kept() {
        assert_eq!(to_18("0055g00000QAOFFAA5"), "0055g00000QAOFFAA5");
        assert_eq!(to_18("005CAROL"), "005CAROL");
        assert_eq!(to_18("0055g00000QAOF-"), "0055g00000QAOF-");
    }
}
