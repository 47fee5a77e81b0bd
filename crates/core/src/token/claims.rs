//! The token's claims and their JSON form: `iat`/`exp` read as numbers or digit strings, written as either.

use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How `iat` and `exp` are written into a token. Reading always accepts both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DateFormat {
    /// JSON numbers, as RFC 7519 has it: `"exp":1495720582`.
    #[default]
    Numeric,
    /// JSON strings of the same digits, as in CRM.COM's samples: `"exp":"1495720582"`.
    String,
}

/// What a token says about its session.
///
/// Deserialising accepts `iat`/`exp` as non-negative JSON integers or as JSON strings of ASCII digits; both are
/// required. `gen` defaults to 0 and `iss` to `None`, so tokens minted by CRM.COM itself parse. Unknown claims
/// are ignored; a repeated claim is an error. Serialising (with [`Serialize`] or [`Claims::to_json`]) writes
/// `jti, usr, org, oun, iat, exp, iss, gen` in that order, leaving out `iss` when it is `None`.
///
/// More claims may be added later, so the struct is `#[non_exhaustive]`: outside this crate it is built with
/// [`Claims::new`] (and [`Claims::issued_by`], [`Claims::at_generation`]) and its fields are read or set one by
/// one.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Claims {
    /// The session id: 32 upper-case hex digits, the same across refreshes.
    pub jti: String,
    /// The username as stored.
    pub usr: String,
    /// The organisation name as stored.
    pub org: String,
    /// The unit the session is logged into: its name, or its code or id when the issuing server's
    /// `token.unit_claim` says so (a unit without a code is named by its name then).
    pub oun: String,
    /// Issue time, unix seconds.
    pub iat: i64,
    /// Expiry time, unix seconds.
    pub exp: i64,
    /// The issuer; `None` in tokens minted by CRM.COM itself.
    pub iss: Option<String>,
    /// The session's refresh generation: 0 for the first token, +1 per refresh.
    pub r#gen: u64,
}

impl Claims {
    /// The claims of a session's first token (generation 0) without an issuer: session id `jti`, username
    /// `usr`, organisation `org`, unit `oun`, issued at `iat` and expiring at `exp` (unix seconds).
    pub fn new(
        jti: impl Into<String>,
        usr: impl Into<String>,
        org: impl Into<String>,
        oun: impl Into<String>,
        iat: i64,
        exp: i64,
    ) -> Claims {
        Claims {
            jti: jti.into(),
            usr: usr.into(),
            org: org.into(),
            oun: oun.into(),
            iat,
            exp,
            iss: None,
            r#gen: 0,
        }
    }

    /// The same claims with issuer `iss`.
    #[must_use]
    pub fn issued_by(mut self, iss: impl Into<String>) -> Claims {
        self.iss = Some(iss.into());
        self
    }

    /// The same claims at refresh generation `generation`.
    #[must_use]
    pub fn at_generation(mut self, generation: u64) -> Claims {
        self.r#gen = generation;
        self
    }

    /// The claims as compact JSON, `iat`/`exp` written per `format`. This is the token's payload.
    pub fn to_json(&self, format: DateFormat) -> String {
        let mut out = String::with_capacity(self.json_capacity());
        self.write_json(&mut out, format);
        out
    }

    /// An upper bound on the common case of the JSON length, to size buffers without reallocating.
    pub(crate) fn json_capacity(&self) -> usize {
        // Key names, punctuation and numbers take under 128 bytes; strings rarely need escaping.
        128 + self.jti.len()
            + self.usr.len()
            + self.org.len()
            + self.oun.len()
            + self.iss.as_ref().map_or(0, String::len)
    }

    pub(crate) fn write_json(&self, out: &mut String, format: DateFormat) {
        out.push_str("{\"jti\":");
        push_json_str(out, &self.jti);
        out.push_str(",\"usr\":");
        push_json_str(out, &self.usr);
        out.push_str(",\"org\":");
        push_json_str(out, &self.org);
        out.push_str(",\"oun\":");
        push_json_str(out, &self.oun);
        out.push_str(",\"iat\":");
        push_date(out, self.iat, format);
        out.push_str(",\"exp\":");
        push_date(out, self.exp, format);
        if let Some(iss) = &self.iss {
            out.push_str(",\"iss\":");
            push_json_str(out, iss);
        }
        out.push_str(",\"gen\":");
        push_u64(out, self.r#gen);
        out.push('}');
    }
}

fn push_date(out: &mut String, value: i64, format: DateFormat) {
    match format {
        DateFormat::Numeric => push_i64(out, value),
        DateFormat::String => {
            out.push('"');
            push_i64(out, value);
            out.push('"');
        }
    }
}

fn push_i64(out: &mut String, value: i64) {
    if value < 0 {
        out.push('-');
    }
    push_u64(out, value.unsigned_abs());
}

fn push_u64(out: &mut String, mut value: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        // `value % 10` is below 10, so the cast cannot truncate.
        buf[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for &digit in &buf[i..] {
        out.push(char::from(digit));
    }
}

/// Appends `s` as a JSON string literal (RFC 8259 escaping).
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

impl Serialize for Claims {
    /// Writes numeric dates; use [`Claims::to_json`] for string dates.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = if self.iss.is_some() { 8 } else { 7 };
        let mut s = serializer.serialize_struct("Claims", len)?;
        s.serialize_field("jti", &self.jti)?;
        s.serialize_field("usr", &self.usr)?;
        s.serialize_field("org", &self.org)?;
        s.serialize_field("oun", &self.oun)?;
        s.serialize_field("iat", &self.iat)?;
        s.serialize_field("exp", &self.exp)?;
        match &self.iss {
            Some(iss) => s.serialize_field("iss", iss)?,
            None => s.skip_field("iss")?,
        }
        s.serialize_field("gen", &self.r#gen)?;
        s.end()
    }
}

const FIELDS: &[&str] = &["jti", "usr", "org", "oun", "iat", "exp", "iss", "gen"];

enum Field {
    Jti,
    Usr,
    Org,
    Oun,
    Iat,
    Exp,
    Iss,
    Gen,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;

        impl Visitor<'_> for FieldVisitor {
            type Value = Field;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a claim name")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(match v {
                    "jti" => Field::Jti,
                    "usr" => Field::Usr,
                    "org" => Field::Org,
                    "oun" => Field::Oun,
                    "iat" => Field::Iat,
                    "exp" => Field::Exp,
                    "iss" => Field::Iss,
                    "gen" => Field::Gen,
                    _ => Field::Other,
                })
            }
        }

        deserializer.deserialize_identifier(FieldVisitor)
    }
}

/// A NumericDate as CRM.COM and RFC 7519 tokens carry it: a non-negative integer, or a string of its digits.
struct NumericDate(i64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DateVisitor;

        impl Visitor<'_> for DateVisitor {
            type Value = NumericDate;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer or a string of digits")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<NumericDate, E> {
                i64::try_from(v)
                    .map(NumericDate)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<NumericDate, E> {
                if v < 0 {
                    return Err(E::invalid_value(de::Unexpected::Signed(v), &self));
                }
                Ok(NumericDate(v))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<NumericDate, E> {
                parse_digits(v)
                    .map(NumericDate)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }

        deserializer.deserialize_any(DateVisitor)
    }
}

/// Parses a non-empty string of ASCII digits into a non-negative `i64`; `None` on anything else or overflow.
fn parse_digits(s: &str) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    s.bytes().try_fold(0i64, |acc, b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(i64::from(b - b'0'))
    })
}

impl<'de> Deserialize<'de> for Claims {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ClaimsVisitor;

        impl<'de> Visitor<'de> for ClaimsVisitor {
            type Value = Claims;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a claims object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Claims, A::Error> {
                fn set<T, E: de::Error>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), E> {
                    if slot.is_some() {
                        return Err(E::duplicate_field(name));
                    }
                    *slot = Some(value);
                    Ok(())
                }

                let (mut jti, mut usr, mut org, mut oun) = (None, None, None, None);
                let (mut iat, mut exp, mut iss, mut generation) = (None, None, None, None);
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        Field::Jti => set(&mut jti, map.next_value::<String>()?, "jti")?,
                        Field::Usr => set(&mut usr, map.next_value::<String>()?, "usr")?,
                        Field::Org => set(&mut org, map.next_value::<String>()?, "org")?,
                        Field::Oun => set(&mut oun, map.next_value::<String>()?, "oun")?,
                        Field::Iat => set(&mut iat, map.next_value::<NumericDate>()?.0, "iat")?,
                        Field::Exp => set(&mut exp, map.next_value::<NumericDate>()?.0, "exp")?,
                        Field::Iss => set(&mut iss, map.next_value::<Option<String>>()?, "iss")?,
                        Field::Gen => set(&mut generation, map.next_value::<u64>()?, "gen")?,
                        Field::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Claims {
                    jti: jti.ok_or_else(|| de::Error::missing_field("jti"))?,
                    usr: usr.ok_or_else(|| de::Error::missing_field("usr"))?,
                    org: org.ok_or_else(|| de::Error::missing_field("org"))?,
                    oun: oun.ok_or_else(|| de::Error::missing_field("oun"))?,
                    iat: iat.ok_or_else(|| de::Error::missing_field("iat"))?,
                    exp: exp.ok_or_else(|| de::Error::missing_field("exp"))?,
                    iss: iss.flatten(),
                    r#gen: generation.unwrap_or(0),
                })
            }
        }

        deserializer.deserialize_struct("Claims", FIELDS, ClaimsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Claims {
        Claims {
            jti: "C972949E8FF14E229F58291ABE3C2663".into(),
            usr: "MPAdministrator".into(),
            org: "ps_r13qa".into(),
            oun: "1".into(),
            iat: 1495713382,
            exp: 1495720582,
            iss: Some("crm-auth".into()),
            r#gen: 3,
        }
    }

    #[test]
    fn json_order_and_formats() {
        let c = sample();
        assert_eq!(
            c.to_json(DateFormat::Numeric),
            r#"{"jti":"C972949E8FF14E229F58291ABE3C2663","usr":"MPAdministrator","org":"ps_r13qa","oun":"1","iat":1495713382,"exp":1495720582,"iss":"crm-auth","gen":3}"#
        );
        assert_eq!(
            c.to_json(DateFormat::String),
            r#"{"jti":"C972949E8FF14E229F58291ABE3C2663","usr":"MPAdministrator","org":"ps_r13qa","oun":"1","iat":"1495713382","exp":"1495720582","iss":"crm-auth","gen":3}"#
        );
        let legacy = Claims { iss: None, ..c };
        assert!(!legacy.to_json(DateFormat::Numeric).contains("iss"));
    }

    #[test]
    fn serde_serialize_matches_to_json() -> serde_json::Result<()> {
        let c = sample();
        assert_eq!(serde_json::to_string(&c)?, c.to_json(DateFormat::Numeric));
        let legacy = Claims { iss: None, ..c };
        assert_eq!(
            serde_json::to_string(&legacy)?,
            legacy.to_json(DateFormat::Numeric)
        );
        Ok(())
    }

    #[test]
    fn escapes_strings_like_serde_json() -> serde_json::Result<()> {
        let c = Claims {
            usr: "a\"b\\c\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}é😀/".into(),
            ..sample()
        };
        assert_eq!(c.to_json(DateFormat::Numeric), serde_json::to_string(&c)?);
        assert_eq!(serde_json::from_str::<Claims>(&c.to_json(DateFormat::String))?, c);
        Ok(())
    }

    #[test]
    fn extreme_numbers() -> serde_json::Result<()> {
        let c = Claims {
            iat: 0,
            exp: i64::MAX,
            r#gen: u64::MAX,
            ..sample()
        };
        for format in [DateFormat::Numeric, DateFormat::String] {
            assert_eq!(serde_json::from_str::<Claims>(&c.to_json(format))?, c);
        }
        Ok(())
    }

    fn parse(json: &str) -> Result<Claims, serde_json::Error> {
        serde_json::from_str(json)
    }

    const BASE: &str = r#""jti":"J","usr":"U","org":"O","oun":"N""#;

    #[test]
    fn dates_as_numbers_or_digit_strings() -> serde_json::Result<()> {
        let n = parse(&format!(r#"{{{BASE},"iat":1,"exp":2}}"#))?;
        let s = parse(&format!(r#"{{{BASE},"iat":"1","exp":"2"}}"#))?;
        assert_eq!(n, s);
        assert_eq!((n.iat, n.exp, n.r#gen, n.iss), (1, 2, 0, None));
        Ok(())
    }

    #[test]
    fn rejects_bad_dates() {
        for (iat, exp) in [
            ("1", "2.0"),
            ("1.5", "2"),
            ("1", "-2"),
            ("-1", "2"),
            ("1", r#""-2""#),
            ("1", r#""2a""#),
            ("1", r#""""#),
            ("1", r#"" 2""#),
            ("1", r#""+2""#),
            ("1", r#""2.0""#),
            ("1", "9223372036854775808"),
            ("1", r#""9223372036854775808""#),
            ("1", "null"),
            ("1", "true"),
            ("1", "[2]"),
            ("1", "2e3"),
        ] {
            let json = format!(r#"{{{BASE},"iat":{iat},"exp":{exp}}}"#);
            assert!(parse(&json).is_err(), "{json}");
        }
    }

    #[test]
    fn rejects_missing_or_repeated_claims() {
        for json in [
            format!(r#"{{{BASE},"iat":1}}"#),
            format!(r#"{{{BASE},"exp":1}}"#),
            r#"{"jti":"J","usr":"U","org":"O","iat":1,"exp":2}"#.to_owned(),
            format!(r#"{{{BASE},"iat":1,"exp":2,"exp":3}}"#),
            format!(r#"{{{BASE},"iat":1,"exp":2,"gen":-1}}"#),
            format!(r#"{{{BASE},"iat":1,"exp":2,"gen":"1"}}"#),
            format!(r#"{{{BASE},"iat":1,"exp":2,"iss":5}}"#),
            format!(r#"[{BASE}]"#),
            r#"["J","U","O","N",1,2,null,0]"#.to_owned(),
            "null".to_owned(),
        ] {
            assert!(parse(&json).is_err(), "{json}");
        }
    }

    #[test]
    fn ignores_unknown_claims() -> serde_json::Result<()> {
        let c = parse(&format!(
            r#"{{"nbf":{{"x":[1]}},{BASE},"iat":1,"exp":2,"iss":null,"gen":7}}"#
        ))?;
        assert_eq!((c.r#gen, c.iss), (7, None));
        Ok(())
    }
}
