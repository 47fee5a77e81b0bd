//! Reading a token from an HTTP `Authorization` header using the Bearer scheme; the Basic scheme, which carries
//! a Web API key, is read by [`parse_basic_authorization`](crate::parse_basic_authorization).

/// Reads the token of an `Authorization: Bearer <token>` header, as the server and the extractor both do.
///
/// Blanks around the header and around the token are ignored and the scheme may be in any letter case. Another
/// scheme, or no token after the scheme, gives `None`, so that the caller looks for the token elsewhere.
pub fn parse_bearer_authorization(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(char::is_whitespace)?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_token_after_the_scheme() {
        for header in [
            "Bearer abc.def.ghi",
            "bearer abc.def.ghi",
            "BEARER  abc.def.ghi ",
            "  Bearer\tabc.def.ghi\t",
        ] {
            assert_eq!(
                parse_bearer_authorization(header),
                Some("abc.def.ghi"),
                "{header:?}"
            );
        }
        // What follows the first blank is the token, blanks inside it included; verifying it will fail.
        assert_eq!(parse_bearer_authorization("Bearer a b"), Some("a b"));
    }

    #[test]
    fn anything_else_is_no_token() {
        for header in [
            "",
            "Bearer",
            "Bearer ",
            "Bearer \t ",
            "Basic abc",
            "Bearerabc",
            "Token abc",
        ] {
            assert_eq!(parse_bearer_authorization(header), None, "{header:?}");
        }
    }
}
