//! Size limits on request fields and tokens, shared by the server (which enforces them) and the client.

/// Most characters a username, organisation or unit may have.
pub const MAX_NAME_CHARS: usize = 256;

/// Most bytes a password may have.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Most bytes a token may have; longer input is rejected before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8192;
