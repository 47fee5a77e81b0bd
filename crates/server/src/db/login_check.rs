//! Password checks in progress per organisation + username, shared by every node through the database: the
//! slots that bound how many passwords of one account are checked at once (`service::lockout`).

use diesel::prelude::*;

use super::DbConnection;
use super::schema::login_checks;

/// A slot taken by one password check.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = login_checks)]
pub struct LoginCheck {
    /// The folded organisation name as typed (the organisation need not exist).
    pub organisation_key: String,
    /// The folded username as typed (the user need not exist).
    pub username_key: String,
    /// The check's own id.
    pub id: String,
    /// When the slot was taken (unix seconds); a slot taken too long ago counts as abandoned.
    pub taken_at: i64,
}

/// Takes a slot.
pub fn create(conn: &mut DbConnection, row: &LoginCheck) -> QueryResult<()> {
    diesel::insert_into(login_checks::table)
        .values(row)
        .execute(conn)
        .map(drop)
}

/// How many slots of this organisation + username were taken after `since` (the live ones).
pub fn count_taken_after(
    conn: &mut DbConnection,
    organisation_key: &str,
    username_key: &str,
    since: i64,
) -> QueryResult<i64> {
    login_checks::table
        .filter(login_checks::organisation_key.eq(organisation_key))
        .filter(login_checks::username_key.eq(username_key))
        .filter(login_checks::taken_at.gt(since))
        .count()
        .get_result(conn)
}

/// Deletes this organisation + username's slots taken at or before `until` (abandoned by a stopped node).
pub fn delete_taken_until(
    conn: &mut DbConnection,
    organisation_key: &str,
    username_key: &str,
    until: i64,
) -> QueryResult<usize> {
    diesel::delete(
        login_checks::table
            .filter(login_checks::organisation_key.eq(organisation_key))
            .filter(login_checks::username_key.eq(username_key))
            .filter(login_checks::taken_at.le(until)),
    )
    .execute(conn)
}

/// Frees a slot; freeing one already gone (deleted as abandoned) is not an error.
pub fn delete(
    conn: &mut DbConnection,
    organisation_key: &str,
    username_key: &str,
    id: &str,
) -> QueryResult<usize> {
    diesel::delete(login_checks::table.find((organisation_key, username_key, id))).execute(conn)
}
