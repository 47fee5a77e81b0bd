//! Entity and session ids: 32 upper-case hex digits, the form CRM.COM uses (a UUID without dashes).

use uuid::Uuid;

/// A fresh random id: a v4 UUID as 32 upper-case hex digits, no dashes. For entities and request ids, whose
/// order means nothing and whose creation time need not show.
pub fn new_id() -> String {
    upper_hex(Uuid::new_v4())
}

/// A fresh session id (a token's `jti`): a v7 UUID as 32 upper-case hex digits. Its leading 48 bits are the
/// creation time in milliseconds and the rest random, and ids made later in one process sort after earlier
/// ones, so a login's insert lands at the end of the sessions index instead of on a random page: with a
/// million sessions stored, random ids made every insert read a page the cache no longer held.
///
/// The time comes from the system clock, not from an injected one: it only orders the index, no decision
/// reads it back (expiry uses the session's columns), and the same id layout then serves every caller,
/// the bench's bulk fill included.
pub fn new_session_id() -> String {
    upper_hex(Uuid::now_v7())
}

fn upper_hex(id: Uuid) -> String {
    let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
    id.simple().encode_upper(&mut buf).to_owned()
}

/// Whether `s` has the form of an id: exactly 32 characters, each `0`-`9` or `A`-`F`.
pub fn is_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_ids_and_distinct() {
        let a = new_id();
        let b = new_id();
        assert!(is_id(&a), "{a}");
        assert!(is_id(&b), "{b}");
        assert_ne!(a, b);
        // Version nibble of a v4 UUID.
        assert_eq!(a.as_bytes()[12], b'4');
    }

    /// Session ids keep the wire form and are time-ordered: each sorts after every one made before it, also
    /// within one millisecond, so inserts append to the index.
    #[test]
    fn session_ids_are_ids_of_version_7_in_creation_order() {
        let ids: Vec<String> = (0..10_000).map(|_| new_session_id()).collect();
        for id in &ids {
            assert!(is_id(id), "{id}");
            assert_eq!(id.as_bytes()[12], b'7', "version nibble of {id}");
            // RFC 9562 variant: the high bits of byte 8 are 10, so its first hex digit is 8 to B.
            assert!(matches!(id.as_bytes()[16], b'8'..=b'B'), "variant of {id}");
        }
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} then {}", pair[0], pair[1]);
        }
        // The leading 48 bits are the creation time in milliseconds: after 2020, before 2100.
        let millis = u64::from_str_radix(&ids[0][..12], 16).unwrap_or(0);
        assert!(
            (1_577_836_800_000..4_102_444_800_000).contains(&millis),
            "{millis}"
        );
    }

    #[test]
    fn is_id_rejects_other_shapes() {
        assert!(is_id("EE63A82C4FEBE02FF34E90DD1EBA5ABE"));
        assert!(!is_id("ee63a82c4febe02ff34e90dd1eba5abe"));
        assert!(!is_id("EE63A82C4FEBE02FF34E90DD1EBA5AB"));
        assert!(!is_id("EE63A82C4FEBE02FF34E90DD1EBA5ABEF"));
        assert!(!is_id("EE63A82C-FEBE02FF34E90DD1EBA5ABE"));
        assert!(!is_id("GE63A82C4FEBE02FF34E90DD1EBA5ABE"));
        assert!(!is_id(""));
    }
}
