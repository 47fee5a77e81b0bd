//! Size limits on request fields and tokens, shared by the server (which enforces them) and the client.

/// Most characters a username, organisation or unit may have.
pub const MAX_NAME_CHARS: usize = 256;

/// Most bytes a password may have.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Most bytes a token may have; longer input is rejected before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8192;

/// Most units a user may be given in one administration request.
pub const MAX_UNITS_PER_USER: usize = 256;

/// Most items one page of an administration list holds (`?limit=`).
pub const MAX_PAGE_ITEMS: usize = 500;

/// Items in one page of an administration list when `?limit=` is absent.
pub const DEFAULT_PAGE_ITEMS: usize = 50;

/// Fewest characters a Web API key brought in by an import may have: shorter keys are too easy to guess.
pub const MIN_IMPORTED_KEY_CHARS: usize = 16;

/// Most characters a Web API key brought in by an import may have.
pub const MAX_IMPORTED_KEY_CHARS: usize = 64;

/// Most characters a password hash brought in by an import may have; the longest accepted PHC strings (64-byte
/// salt and output) stay well under it.
pub const MAX_HASH_CHARS: usize = 512;
