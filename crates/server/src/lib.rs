//! The crm-auth service library.
