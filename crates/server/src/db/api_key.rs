//! Web API keys: stored only as a SHA-256 digest, found by that digest.

use diesel::dsl::AsSelect;
use diesel::prelude::*;

use super::organisation::Organisation;
use super::schema::{api_keys, organisations, units, user_units, users};
use super::unit::Unit;
use super::user::User;
use super::{Db, DbConnection};

/// A stored key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys)]
pub struct ApiKeyRow {
    /// 32 upper-case hex; what `key revoke` takes.
    pub id: String,
    /// The key's organisation.
    pub organisation_id: String,
    /// The user whose sessions the key opens.
    pub user_id: String,
    /// SHA-256 of the key, lower-case hex.
    pub digest: String,
    /// The key's first characters, to tell keys apart in listings.
    pub prefix: String,
    /// Unix seconds.
    pub created_at: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
    /// When it last opened a session.
    pub last_used_at: Option<i64>,
    /// An optional name to tell keys apart (names may repeat).
    pub name: Option<String>,
    /// From this time on (unix seconds) the key logs in as an unknown key would; `None`: never.
    pub expires_at: Option<i64>,
}

impl ApiKeyRow {
    /// Whether the key has expired at `now`.
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// Inserts a key.
pub fn create(conn: &mut DbConnection, key: &ApiKeyRow) -> QueryResult<()> {
    diesel::insert_into(api_keys::table)
        .values(key)
        .execute(conn)
        .map(drop)
}

/// Inserts keys, [`super::IMPORT_BATCH`] rows per statement.
pub fn create_batch(conn: &mut DbConnection, rows: &[ApiKeyRow]) -> QueryResult<()> {
    for chunk in rows.chunks(super::IMPORT_BATCH) {
        match conn {
            DbConnection::Postgres(c) => diesel::insert_into(api_keys::table).values(chunk).execute(c)?,
            DbConnection::Sqlite(c) => diesel::insert_into(api_keys::table).values(chunk).execute(c)?,
        };
    }
    Ok(())
}

/// The keys (revoked ones included) with these digests, in any order.
pub fn find_by_digests(conn: &mut DbConnection, digests: &[String]) -> QueryResult<Vec<ApiKeyRow>> {
    let mut found = Vec::new();
    for chunk in digests.chunks(super::IMPORT_BATCH) {
        found.extend(
            api_keys::table
                .filter(api_keys::digest.eq_any(chunk))
                .select(ApiKeyRow::as_select())
                .load(conn)?,
        );
    }
    Ok(found)
}

/// The unrevoked key with this digest.
pub fn find_active_by_digest(conn: &mut DbConnection, digest: &str) -> QueryResult<Option<ApiKeyRow>> {
    api_keys::table
        .filter(api_keys::digest.eq(digest))
        .filter(api_keys::revoked_at.is_null())
        .select(ApiKeyRow::as_select())
        .get_result(conn)
        .optional()
}

/// The key with this id.
pub fn find_by_id(conn: &mut DbConnection, id: &str) -> QueryResult<Option<ApiKeyRow>> {
    api_keys::table
        .find(id)
        .select(ApiKeyRow::as_select())
        .get_result(conn)
        .optional()
}

/// Every key of an organisation, oldest first.
pub fn find_by_organisation(conn: &mut DbConnection, organisation_id: &str) -> QueryResult<Vec<ApiKeyRow>> {
    api_keys::table
        .filter(api_keys::organisation_id.eq(organisation_id))
        .order((api_keys::created_at.asc(), api_keys::id.asc()))
        .select(ApiKeyRow::as_select())
        .load(conn)
}

/// Revokes a key if it is not revoked yet; returns the rows changed.
pub fn update_revoked(conn: &mut DbConnection, id: &str, now: i64) -> QueryResult<usize> {
    diesel::update(api_keys::table.find(id).filter(api_keys::revoked_at.is_null()))
        .set(api_keys::revoked_at.eq(now))
        .execute(conn)
}

/// Records a use of the key.
pub fn update_last_used(conn: &mut DbConnection, id: &str, now: i64) -> QueryResult<usize> {
    diesel::update(api_keys::table.find(id))
        .set(api_keys::last_used_at.eq(now))
        .execute(conn)
}

/// A key with its user, its organisation and the user's default unit (if the user has one).
pub type KeyWithOwner = (ApiKeyRow, User, Organisation, Option<Unit>);

/// Unrevoked keys, each joined with its user, its organisation and the user's default unit (if any).
#[diesel::dsl::auto_type(no_type_alias)]
fn unrevoked_with_owner() -> _ {
    api_keys::table
        .inner_join(users::table.on(users::id.eq(api_keys::user_id)))
        .inner_join(organisations::table.on(organisations::id.eq(api_keys::organisation_id)))
        .left_join(
            user_units::table.on(user_units::user_id
                .eq(api_keys::user_id)
                .and(user_units::is_default.eq(true))),
        )
        .left_join(units::table.on(units::id.eq(user_units::unit_id)))
        .filter(api_keys::revoked_at.is_null())
}

/// What [`unrevoked_with_owner`] selects, as a [`KeyWithOwner`].
#[diesel::dsl::auto_type(no_type_alias)]
fn owner_columns() -> _ {
    let key: AsSelect<ApiKeyRow, Db> = ApiKeyRow::as_select();
    let user: AsSelect<User, Db> = User::as_select();
    let organisation: AsSelect<Organisation, Db> = Organisation::as_select();
    let unit: AsSelect<Option<Unit>, Db> = Option::<Unit>::as_select();
    (key, user, organisation, unit)
}

/// The unrevoked key with this digest, with its user, its organisation and the user's default unit (if any),
/// in one statement: all a key login reads before it opens a session.
pub fn find_active_with_owner(conn: &mut DbConnection, digest: &str) -> QueryResult<Option<KeyWithOwner>> {
    unrevoked_with_owner()
        .filter(api_keys::digest.eq(digest))
        .select(owner_columns())
        .get_result(conn)
        .optional()
}

/// [`find_active_with_owner`] for many digests in one statement (`= ANY($1)` on PostgreSQL); digests of no
/// unrevoked key are left out.
pub fn find_many_active_with_owner(
    conn: &mut DbConnection,
    digests: &[&str],
) -> QueryResult<Vec<KeyWithOwner>> {
    unrevoked_with_owner()
        .filter(api_keys::digest.eq_any(digests))
        .select(owner_columns())
        .load(conn)
}

/// Up to `limit` keys of an organisation (revoked ones included) with their users' usernames, oldest first,
/// after the cursor.
pub fn page_in(
    conn: &mut DbConnection,
    organisation_id: &str,
    after: super::After<'_>,
    limit: i64,
) -> QueryResult<Vec<(ApiKeyRow, String)>> {
    let query = api_keys::table
        .inner_join(users::table.on(users::id.eq(api_keys::user_id)))
        .filter(api_keys::organisation_id.eq(organisation_id.to_owned()))
        .into_boxed();
    let query = after_cursor!(query, api_keys::created_at, api_keys::id, after);
    query
        .order((api_keys::created_at.asc(), api_keys::id.asc()))
        .limit(limit)
        .select((ApiKeyRow::as_select(), users::username))
        .load(conn)
}
