//! Limits on a request's header section that the application enforces itself, below the HTTP stack's own.
//!
//! actix answers a head over 128 KiB or with more than 96 fields with a bare 431 before any of our code runs.
//! Refusing smaller excesses here means that every request a legitimate client could plausibly send oversized
//! gets the contract's envelope; only heads past actix's limits get its empty answer (listed in the README).

use actix_web::HttpRequest;

use crate::error::ApiError;

/// The most bytes of header fields a request may carry, counted as sent (`name: value` and its line end).
/// Well above anything a client of this API sends (a token is under 1 KiB) and well below actix's 128 KiB.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The most header fields a request may carry (actix refuses more than 96 itself).
pub const MAX_HEADER_FIELDS: usize = 64;

/// Refuses a request whose header section is over [`MAX_HEADER_BYTES`] or [`MAX_HEADER_FIELDS`].
pub fn check_headers(req: &HttpRequest) -> Result<(), ApiError> {
    let headers = req.headers();
    if headers.len() > MAX_HEADER_FIELDS {
        return Err(ApiError::InvalidRequest(format!(
            "the request has more than {MAX_HEADER_FIELDS} header fields"
        )));
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + ": \r\n".len())
        .sum();
    if bytes > MAX_HEADER_BYTES {
        return Err(ApiError::InvalidRequest(format!(
            "the request headers are over {} KiB",
            MAX_HEADER_BYTES / 1024
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn headers_at_the_limits_pass_and_one_more_is_refused() {
        let fields = |n: usize| {
            (0..n)
                .fold(TestRequest::default(), |req, i| {
                    req.insert_header((format!("x-h{i}"), "v"))
                })
                .to_http_request()
        };
        assert!(check_headers(&fields(MAX_HEADER_FIELDS)).is_ok());
        assert!(check_headers(&fields(MAX_HEADER_FIELDS + 1)).is_err());
        // `x-big: ` + value + line end.
        let sized = |n: usize| {
            TestRequest::default()
                .insert_header(("x-big", "b".repeat(n - "x-big: \r\n".len())))
                .to_http_request()
        };
        assert!(check_headers(&sized(MAX_HEADER_BYTES)).is_ok());
        assert!(check_headers(&sized(MAX_HEADER_BYTES + 1)).is_err());
    }
}
