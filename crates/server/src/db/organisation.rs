//! Organisations: the top of the tenancy tree; names are unique case-insensitively.

use diesel::prelude::*;

use super::schema::organisations;
use super::{After, DbConnection};

/// A stored organisation.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = organisations)]
pub struct Organisation {
    /// 32 upper-case hex.
    pub id: String,
    /// The name as created.
    pub name: String,
    /// The case-folded name that lookups and the unique index use.
    pub name_key: String,
    /// Inactive organisations get no tokens and their sessions end at the next refresh.
    pub is_active: bool,
    /// Unix seconds.
    pub created_at: i64,
}

/// Inserts an organisation.
pub fn create(conn: &mut DbConnection, org: &Organisation) -> QueryResult<()> {
    diesel::insert_into(organisations::table)
        .values(org)
        .execute(conn)
        .map(drop)
}

/// Inserts organisations, [`super::IMPORT_BATCH`] rows per statement.
pub fn create_batch(conn: &mut DbConnection, rows: &[Organisation]) -> QueryResult<()> {
    for chunk in rows.chunks(super::IMPORT_BATCH) {
        match conn {
            DbConnection::Postgres(c) => diesel::insert_into(organisations::table)
                .values(chunk)
                .execute(c)?,
            DbConnection::Sqlite(c) => diesel::insert_into(organisations::table)
                .values(chunk)
                .execute(c)?,
        };
    }
    Ok(())
}

/// The organisations with these ids or these name keys ([`super::name_key`]'s), in any order.
pub fn find_by_ids_or_keys(
    conn: &mut DbConnection,
    ids: &[String],
    keys: &[String],
) -> QueryResult<Vec<Organisation>> {
    let mut found = Vec::new();
    for chunk in ids.chunks(super::IMPORT_BATCH) {
        found.extend(
            organisations::table
                .filter(organisations::id.eq_any(chunk))
                .select(Organisation::as_select())
                .load(conn)?,
        );
    }
    for chunk in keys.chunks(super::IMPORT_BATCH) {
        found.extend(
            organisations::table
                .filter(organisations::name_key.eq_any(chunk))
                .select(Organisation::as_select())
                .load(conn)?,
        );
    }
    Ok(found)
}

/// The organisation with this name, case-insensitively.
pub fn find_by_name(conn: &mut DbConnection, name: &str) -> QueryResult<Option<Organisation>> {
    organisations::table
        .filter(organisations::name_key.eq(super::name_key(name)))
        .select(Organisation::as_select())
        .get_result(conn)
        .optional()
}

/// The organisation with this id.
pub fn find_by_id(conn: &mut DbConnection, id: &str) -> QueryResult<Option<Organisation>> {
    organisations::table
        .find(id)
        .select(Organisation::as_select())
        .get_result(conn)
        .optional()
}

/// Enables or disables an organisation; returns the rows changed.
pub fn update_active(conn: &mut DbConnection, id: &str, is_active: bool) -> QueryResult<usize> {
    diesel::update(organisations::table.find(id))
        .set(organisations::is_active.eq(is_active))
        .execute(conn)
}

/// The organisation named by an operator: its id, else its name.
pub fn find_by_id_or_name(conn: &mut DbConnection, id_or_name: &str) -> QueryResult<Option<Organisation>> {
    match find_by_id(conn, id_or_name)? {
        Some(org) => Ok(Some(org)),
        None => find_by_name(conn, id_or_name),
    }
}

/// Every organisation's id and name, for the look-alike warning of a new one.
pub fn all_names(conn: &mut DbConnection) -> QueryResult<Vec<(String, String)>> {
    organisations::table
        .select((organisations::id, organisations::name))
        .load(conn)
}

/// Up to `limit` organisations, oldest first, after the cursor; with `only`, just the organisation with that
/// id.
pub fn page(
    conn: &mut DbConnection,
    only: Option<&str>,
    after: After<'_>,
    limit: i64,
) -> QueryResult<Vec<Organisation>> {
    let mut query = organisations::table.into_boxed();
    if let Some(id) = only {
        query = query.filter(organisations::id.eq(id.to_owned()));
    }
    let query = after_cursor!(query, organisations::created_at, organisations::id, after);
    query
        .order((organisations::created_at.asc(), organisations::id.asc()))
        .limit(limit)
        .select(Organisation::as_select())
        .load(conn)
}
