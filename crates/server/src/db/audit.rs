//! The audit table: one row per administrative change, written in the change's own transaction, listed per
//! organisation oldest first.

use diesel::prelude::*;

use super::DbConnection;
use super::schema::audit_events;

/// One recorded change. Never holds a secret: `target` names the object (a username, a key id, a session id,
/// a unit name), never a password, hash, key or token.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_events)]
pub struct AuditEvent {
    /// 32 upper-case hex.
    pub id: String,
    /// The organisation the change concerns; `None` for a change of no organisation.
    pub organisation_id: Option<String>,
    /// Unix seconds.
    pub at: i64,
    /// Who made it: `cli`, or `username@organisation` for an API caller.
    pub actor: String,
    /// What was done, as the log's audit event: `user.create`, `key.revoke`, ...
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// The caller's address, for API callers.
    pub client: Option<String>,
}

/// Inserts an event.
pub fn create(conn: &mut DbConnection, event: &AuditEvent) -> QueryResult<()> {
    diesel::insert_into(audit_events::table)
        .values(event)
        .execute(conn)
        .map(drop)
}

/// Up to `limit` events of an organisation, oldest first, after the event at the cursor `(at, id)` if one is
/// given (the last event of the previous page). The order is total, so paging neither skips nor repeats an
/// event, even of events written in the same second.
pub fn list_for_organisation(
    conn: &mut DbConnection,
    organisation_id: &str,
    after: Option<(i64, &str)>,
    limit: i64,
) -> QueryResult<Vec<AuditEvent>> {
    let query = audit_events::table
        .filter(audit_events::organisation_id.eq(organisation_id))
        .into_boxed();
    let query = after_cursor!(query, audit_events::at, audit_events::id, after);
    query
        .order((audit_events::at.asc(), audit_events::id.asc()))
        .limit(limit)
        .select(AuditEvent::as_select())
        .load(conn)
}
