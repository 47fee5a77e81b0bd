//! Units of an organisation: a session is always logged into one.

use diesel::prelude::*;

use super::schema::units;
use super::{After, DbConnection};

/// A stored unit.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = units)]
pub struct Unit {
    /// 32 upper-case hex.
    pub id: String,
    /// The owning organisation.
    pub organisation_id: String,
    /// The name as created; unique in the organisation, case-insensitively.
    pub name: String,
    /// The case-folded name.
    pub name_key: String,
    /// An optional short code; unique in the organisation, case-insensitively.
    pub code: Option<String>,
    /// The case-folded code.
    pub code_key: Option<String>,
    /// Sessions in an inactive unit end at their next refresh.
    pub is_active: bool,
    /// Unix seconds.
    pub created_at: i64,
}

/// Inserts a unit.
pub fn create(conn: &mut DbConnection, unit: &Unit) -> QueryResult<()> {
    diesel::insert_into(units::table)
        .values(unit)
        .execute(conn)
        .map(drop)
}

/// Inserts units, [`super::IMPORT_BATCH`] rows per statement.
pub fn create_batch(conn: &mut DbConnection, rows: &[Unit]) -> QueryResult<()> {
    for chunk in rows.chunks(super::IMPORT_BATCH) {
        match conn {
            DbConnection::Postgres(c) => diesel::insert_into(units::table).values(chunk).execute(c)?,
            DbConnection::Sqlite(c) => diesel::insert_into(units::table).values(chunk).execute(c)?,
        };
    }
    Ok(())
}

/// Every unit of these organisations.
pub fn find_in_organisations(conn: &mut DbConnection, organisation_ids: &[String]) -> QueryResult<Vec<Unit>> {
    let mut found = Vec::new();
    for chunk in organisation_ids.chunks(super::IMPORT_BATCH) {
        found.extend(
            units::table
                .filter(units::organisation_id.eq_any(chunk))
                .order((units::created_at.asc(), units::id.asc()))
                .select(Unit::as_select())
                .load(conn)?,
        );
    }
    Ok(found)
}

/// The unit with this id.
pub fn find_by_id(conn: &mut DbConnection, id: &str) -> QueryResult<Option<Unit>> {
    units::table
        .find(id)
        .select(Unit::as_select())
        .get_result(conn)
        .optional()
}

/// Enables or disables a unit; returns the rows changed.
pub fn update_active(conn: &mut DbConnection, id: &str, is_active: bool) -> QueryResult<usize> {
    diesel::update(units::table.find(id))
        .set(units::is_active.eq(is_active))
        .execute(conn)
}

/// Resolves what a client or operator typed: a unit id, else a name, else a code, within one organisation.
pub fn find_in_organisation(
    conn: &mut DbConnection,
    organisation_id: &str,
    wanted: &str,
) -> QueryResult<Option<Unit>> {
    let in_org = || units::table.filter(units::organisation_id.eq(organisation_id.to_owned()));
    if let Some(unit) = in_org()
        .filter(units::id.eq(wanted))
        .select(Unit::as_select())
        .get_result(conn)
        .optional()?
    {
        return Ok(Some(unit));
    }
    let key = super::name_key(wanted);
    if let Some(unit) = in_org()
        .filter(units::name_key.eq(&key))
        .select(Unit::as_select())
        .get_result(conn)
        .optional()?
    {
        return Ok(Some(unit));
    }
    in_org()
        .filter(units::code_key.eq(&key))
        .select(Unit::as_select())
        .get_result(conn)
        .optional()
}

/// The id, name and code of every unit of the organisation, for the look-alike warning of a new one.
pub fn all_names_in(
    conn: &mut DbConnection,
    organisation_id: &str,
) -> QueryResult<Vec<(String, String, Option<String>)>> {
    units::table
        .filter(units::organisation_id.eq(organisation_id))
        .select((units::id, units::name, units::code))
        .load(conn)
}

/// Up to `limit` units of an organisation, oldest first, after the cursor.
pub fn page_in(
    conn: &mut DbConnection,
    organisation_id: &str,
    after: After<'_>,
    limit: i64,
) -> QueryResult<Vec<Unit>> {
    let query = units::table
        .filter(units::organisation_id.eq(organisation_id.to_owned()))
        .into_boxed();
    let query = after_cursor!(query, units::created_at, units::id, after);
    query
        .order((units::created_at.asc(), units::id.asc()))
        .limit(limit)
        .select(Unit::as_select())
        .load(conn)
}
