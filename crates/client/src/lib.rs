//! Typed SDK for crm-auth.
