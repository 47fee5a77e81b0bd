//! Wire types, claims, keyring and HS256 sign/verify for crm-auth.
