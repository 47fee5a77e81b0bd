//! Entity and session ids: 32 upper-case hex digits, the form CRM.COM uses (a v4 UUID without dashes).

use uuid::Uuid;

/// A fresh random id: a v4 UUID as 32 upper-case hex digits, no dashes.
pub fn new_id() -> String {
    let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
    Uuid::new_v4().simple().encode_upper(&mut buf).to_owned()
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
