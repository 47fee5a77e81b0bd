//! Password checks in progress per organisation + username, shared by every node through the database: the
//! slots that bound how many passwords of one account are checked at once (`service::lockout`).

use diesel::prelude::*;

use super::schema::login_checks;
use super::{DbConnection, PURGE_BATCH};

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

/// Takes the slot `row` if fewer than `allowed` slots of its organisation + username were taken after `since`
/// (the live ones); whether it did. One statement: on PostgreSQL it counts the slots committed before it
/// started, so run it in a transaction after the account's counter row was locked there
/// ([`super::login_failure::lock`]), and the count includes every slot taken by whoever held the lock before.
pub fn take_if_room(
    conn: &mut DbConnection,
    row: &LoginCheck,
    since: i64,
    allowed: i64,
) -> QueryResult<bool> {
    use diesel::sql_types::{BigInt, Text};

    // An INSERT ... SELECT guarded by a count, which diesel's query builder does not express; both backends
    // accept the SQL, only the placeholders differ.
    let sql = match conn {
        DbConnection::Postgres(_) => {
            "INSERT INTO login_checks (organisation_key, username_key, id, taken_at) SELECT $1, $2, $3, $4 \
             WHERE (SELECT count(*) FROM login_checks \
             WHERE organisation_key = $1 AND username_key = $2 AND taken_at > $5) < $6"
        }
        DbConnection::Sqlite(_) => {
            "INSERT INTO login_checks (organisation_key, username_key, id, taken_at) SELECT ?1, ?2, ?3, ?4 \
             WHERE (SELECT count(*) FROM login_checks \
             WHERE organisation_key = ?1 AND username_key = ?2 AND taken_at > ?5) < ?6"
        }
    };
    diesel::sql_query(sql)
        .bind::<Text, _>(&row.organisation_key)
        .bind::<Text, _>(&row.username_key)
        .bind::<Text, _>(&row.id)
        .bind::<BigInt, _>(row.taken_at)
        .bind::<BigInt, _>(since)
        .bind::<BigInt, _>(allowed)
        .execute(conn)
        .map(|inserted| inserted == 1)
}

/// Frees the slot `id` and resets the account's failure count, in one statement (PostgreSQL only: SQLite has
/// no DELETE in a WITH clause). The counter row stays for the next login to lock (a row with no failures, as
/// [`super::login_failure::lock`] creates it) and is written only if it counted failures. Both rows are the
/// account's own and no other statement locks them in the other order, so it needs no lock of the counter
/// first.
pub fn delete_and_reset(
    conn: &mut diesel::PgConnection,
    organisation_key: &str,
    username_key: &str,
    id: &str,
    now: i64,
) -> QueryResult<usize> {
    use diesel::sql_types::{BigInt, Text};

    diesel::sql_query(
        "WITH freed AS (DELETE FROM login_checks \
         WHERE organisation_key = $1 AND username_key = $2 AND id = $3) \
         UPDATE login_failures SET failures = 0, locked_until = 0, updated_at = $4 \
         WHERE organisation_key = $1 AND username_key = $2 AND (failures <> 0 OR locked_until <> 0)",
    )
    .bind::<Text, _>(organisation_key)
    .bind::<Text, _>(username_key)
    .bind::<Text, _>(id)
    .bind::<BigInt, _>(now)
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

/// Deletes at most [`PURGE_BATCH`] slots taken at or before `cutoff` (abandoned by a node that stopped
/// mid-check: they no longer count), of any account; returns how many. Fewer than [`PURGE_BATCH`] means none
/// is left. The table holds only the checks in progress, so it needs no index on the time.
pub fn delete_abandoned(conn: &mut DbConnection, cutoff: i64) -> QueryResult<usize> {
    use diesel::sql_types::BigInt;

    // A row-value IN over the three-column key, which diesel's query builder does not express; both backends
    // accept the SQL, only the placeholders differ.
    let sql = match conn {
        DbConnection::Postgres(_) => {
            "DELETE FROM login_checks WHERE (organisation_key, username_key, id) IN \
             (SELECT organisation_key, username_key, id FROM login_checks WHERE taken_at <= $1 LIMIT $2)"
        }
        DbConnection::Sqlite(_) => {
            "DELETE FROM login_checks WHERE (organisation_key, username_key, id) IN \
             (SELECT organisation_key, username_key, id FROM login_checks WHERE taken_at <= ? LIMIT ?)"
        }
    };
    diesel::sql_query(sql)
        .bind::<BigInt, _>(cutoff)
        .bind::<BigInt, _>(PURGE_BATCH)
        .execute(conn)
}

/// How many slots were taken at or before `cutoff` (abandoned).
pub fn count_abandoned(conn: &mut DbConnection, cutoff: i64) -> QueryResult<i64> {
    login_checks::table
        .filter(login_checks::taken_at.le(cutoff))
        .count()
        .get_result(conn)
}
