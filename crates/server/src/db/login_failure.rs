//! Failed-login counters per organisation + username, shared by every node through the database.

use diesel::prelude::*;

use super::schema::login_failures;
use super::{DbConnection, PURGE_BATCH};

/// A counter row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = login_failures)]
pub struct LoginFailure {
    /// The case-folded organisation name as typed (the organisation need not exist).
    pub organisation_key: String,
    /// The case-folded username as typed (the user need not exist).
    pub username_key: String,
    /// Consecutive failed password checks.
    pub failures: i64,
    /// No attempt is checked before this time (unix seconds).
    pub locked_until: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// The counter for this organisation + username.
pub fn find(
    conn: &mut DbConnection,
    organisation_key: &str,
    username_key: &str,
) -> QueryResult<Option<LoginFailure>> {
    login_failures::table
        .find((organisation_key, username_key))
        .select(LoginFailure::as_select())
        .get_result(conn)
        .optional()
}

/// Inserts a first counter; fails with a unique violation when a concurrent attempt inserted it first.
pub fn create(conn: &mut DbConnection, row: &LoginFailure) -> QueryResult<()> {
    diesel::insert_into(login_failures::table)
        .values(row)
        .execute(conn)
        .map(drop)
}

/// The counter for this organisation + username, created at zero failures if there is none, and locked until
/// the end of the transaction: concurrent logins of one account, on any node, take their turns here. On
/// PostgreSQL an existing row is locked with `SELECT ... FOR UPDATE`, which writes no new row version (a passed
/// check leaves the row in place for the next login); a missing one is created by an upsert (an `ON CONFLICT DO
/// UPDATE` waits for a concurrent creator and then locks its row). On SQLite the write transaction already
/// holds the database's only write lock, so finding or inserting the row is enough.
pub fn lock(
    conn: &mut DbConnection,
    organisation_key: &str,
    username_key: &str,
    now: i64,
) -> QueryResult<LoginFailure> {
    let fresh = LoginFailure {
        organisation_key: organisation_key.to_owned(),
        username_key: username_key.to_owned(),
        failures: 0,
        locked_until: 0,
        updated_at: now,
    };
    match conn {
        DbConnection::Postgres(pg) => {
            let existing = login_failures::table
                .find((organisation_key, username_key))
                .select(LoginFailure::as_select())
                .for_update()
                .get_result(pg)
                .optional()?;
            match existing {
                Some(row) => Ok(row),
                None => diesel::insert_into(login_failures::table)
                    .values(&fresh)
                    .on_conflict((login_failures::organisation_key, login_failures::username_key))
                    .do_update()
                    .set(login_failures::failures.eq(login_failures::failures))
                    .returning(LoginFailure::as_returning())
                    .get_result(pg),
            }
        }
        DbConnection::Sqlite(_) => match find(conn, organisation_key, username_key)? {
            Some(row) => Ok(row),
            None => create(conn, &fresh).map(|()| fresh),
        },
    }
}

/// Writes the counter's failures, lock and time.
pub fn update(conn: &mut DbConnection, row: &LoginFailure) -> QueryResult<()> {
    diesel::update(login_failures::table.find((&row.organisation_key, &row.username_key)))
        .set((
            login_failures::failures.eq(row.failures),
            login_failures::locked_until.eq(row.locked_until),
            login_failures::updated_at.eq(row.updated_at),
        ))
        .execute(conn)
        .map(drop)
}

/// Forgets the counter (after a successful login).
pub fn delete(conn: &mut DbConnection, organisation_key: &str, username_key: &str) -> QueryResult<usize> {
    diesel::delete(login_failures::table.find((organisation_key, username_key))).execute(conn)
}

/// Deletes at most [`PURGE_BATCH`] counters last changed before `cutoff` (`now` less
/// `auth.lockout.max_seconds`, so any lock they set has run out); returns how many. Fewer than
/// [`PURGE_BATCH`] means none is left.
pub fn delete_stale(conn: &mut DbConnection, cutoff: i64) -> QueryResult<usize> {
    use diesel::sql_types::BigInt;

    // A row-value IN over the two-column key, which diesel's query builder does not express; both backends
    // accept the SQL, only the placeholders differ.
    let sql = match conn {
        DbConnection::Postgres(_) => {
            "DELETE FROM login_failures WHERE (organisation_key, username_key) IN \
             (SELECT organisation_key, username_key FROM login_failures WHERE updated_at < $1 LIMIT $2)"
        }
        DbConnection::Sqlite(_) => {
            "DELETE FROM login_failures WHERE (organisation_key, username_key) IN \
             (SELECT organisation_key, username_key FROM login_failures WHERE updated_at < ? LIMIT ?)"
        }
    };
    diesel::sql_query(sql)
        .bind::<BigInt, _>(cutoff)
        .bind::<BigInt, _>(PURGE_BATCH)
        .execute(conn)
}

/// How many counters were last changed before `cutoff`.
pub fn count_stale(conn: &mut DbConnection, cutoff: i64) -> QueryResult<i64> {
    login_failures::table
        .filter(login_failures::updated_at.lt(cutoff))
        .count()
        .get_result(conn)
}
