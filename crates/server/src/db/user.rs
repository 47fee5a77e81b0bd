//! Users of an organisation and their unit memberships (exactly one default).

use crm_auth_core::Role;
use diesel::deserialize::FromSqlRow;
use diesel::expression::AsExpression;
use diesel::prelude::*;
use diesel::sql_types::Text;

use super::DbConnection;
use super::organisation::Organisation;
use super::schema::{user_units, users};
use super::unit::Unit;

/// The `role` column: a [`Role`] by its wire name (core's type, which knows nothing of diesel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub struct RoleColumn(Role);

impl From<Role> for RoleColumn {
    fn from(role: Role) -> RoleColumn {
        RoleColumn(role)
    }
}

impl From<RoleColumn> for Role {
    fn from(RoleColumn(role): RoleColumn) -> Role {
        role
    }
}

text_column!(RoleColumn, |role| role.0.as_str(), |name| name
    .parse()
    .ok()
    .map(RoleColumn));

/// A stored user.
#[derive(Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
pub struct User {
    /// 32 upper-case hex.
    pub id: String,
    /// The owning organisation.
    pub organisation_id: String,
    /// The username as created.
    pub username: String,
    /// The case-folded username; unique in the organisation.
    pub username_key: String,
    /// Argon2id PHC string; `None` for users that may only use Web API keys.
    pub password_hash: Option<String>,
    /// Disabled users get no token and their sessions end.
    pub is_active: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// What the user may do besides getting tokens.
    #[diesel(serialize_as = RoleColumn, deserialize_as = RoleColumn)]
    pub role: Role,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("organisation_id", &self.organisation_id)
            .field("username", &self.username)
            .field("has_password", &self.password_hash.is_some())
            .field("is_active", &self.is_active)
            .field("role", &self.role)
            .finish()
    }
}

/// One membership row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = user_units)]
pub struct Membership {
    /// The member.
    pub user_id: String,
    /// The unit.
    pub unit_id: String,
    /// Whether this is the user's default unit.
    pub is_default: bool,
}

/// Inserts a user and its memberships in one transaction; `default_unit_id` must be among `unit_ids`.
pub fn create(
    conn: &mut DbConnection,
    user: &User,
    unit_ids: &[String],
    default_unit_id: &str,
) -> QueryResult<()> {
    conn.transaction(|conn| {
        // Owned: the role column converts on the way in, which diesel does for owned values only.
        diesel::insert_into(users::table)
            .values(user.clone())
            .execute(conn)?;
        let rows: Vec<Membership> = unit_ids
            .iter()
            .map(|unit_id| Membership {
                user_id: user.id.clone(),
                unit_id: unit_id.clone(),
                is_default: unit_id == default_unit_id,
            })
            .collect();
        for row in &rows {
            diesel::insert_into(user_units::table).values(row).execute(conn)?;
        }
        Ok(())
    })
}

/// Inserts users and then their memberships, [`super::IMPORT_BATCH`] rows per statement; every membership's
/// user must be among `users` or stored already.
pub fn create_batch(conn: &mut DbConnection, users: &[User], memberships: &[Membership]) -> QueryResult<()> {
    for chunk in users.chunks(super::IMPORT_BATCH) {
        // Owned: the role column converts on the way in, which diesel does for owned values only.
        let rows = chunk.to_vec();
        match conn {
            DbConnection::Postgres(c) => diesel::insert_into(users::table).values(rows).execute(c)?,
            DbConnection::Sqlite(c) => diesel::insert_into(users::table).values(rows).execute(c)?,
        };
    }
    for chunk in memberships.chunks(super::IMPORT_BATCH) {
        match conn {
            DbConnection::Postgres(c) => diesel::insert_into(user_units::table).values(chunk).execute(c)?,
            DbConnection::Sqlite(c) => diesel::insert_into(user_units::table).values(chunk).execute(c)?,
        };
    }
    Ok(())
}

/// The users of the organisation with these username keys ([`super::name_key`]'s), in any order.
pub fn find_by_keys(
    conn: &mut DbConnection,
    organisation_id: &str,
    keys: &[String],
) -> QueryResult<Vec<User>> {
    let mut found = Vec::new();
    for chunk in keys.chunks(super::IMPORT_BATCH) {
        found.extend(
            users::table
                .filter(users::organisation_id.eq(organisation_id))
                .filter(users::username_key.eq_any(chunk))
                .select(User::as_select())
                .load(conn)?,
        );
    }
    Ok(found)
}

/// The memberships of these users, in any order.
pub fn find_memberships_of(conn: &mut DbConnection, user_ids: &[String]) -> QueryResult<Vec<Membership>> {
    let mut found = Vec::new();
    for chunk in user_ids.chunks(super::IMPORT_BATCH) {
        found.extend(
            user_units::table
                .filter(user_units::user_id.eq_any(chunk))
                .select(Membership::as_select())
                .load(conn)?,
        );
    }
    Ok(found)
}

/// Replaces the user's memberships with `unit_ids` (default `default_unit_id`, which must be among them) and
/// ends the user's live sessions in units it left; returns how many ended. The user's row is updated first, in
/// the same transaction, so it is locked as a disable locks it: a login's post-insert re-check waits for this
/// change (see `session::lock_standing`), and a session it opened in a unit left here is ended either here or
/// by that re-check.
pub fn update_memberships(
    conn: &mut DbConnection,
    user_id: &str,
    unit_ids: &[String],
    default_unit_id: &str,
    now: i64,
) -> QueryResult<usize> {
    use super::schema::sessions;
    use super::session::EndReason;
    conn.transaction(|conn| {
        diesel::update(users::table.find(user_id))
            .set(users::is_active.eq(users::is_active))
            .execute(conn)?;
        diesel::delete(user_units::table.filter(user_units::user_id.eq(user_id))).execute(conn)?;
        for unit_id in unit_ids {
            let row = Membership {
                user_id: user_id.to_owned(),
                unit_id: unit_id.clone(),
                is_default: unit_id == default_unit_id,
            };
            diesel::insert_into(user_units::table)
                .values(&row)
                .execute(conn)?;
        }
        diesel::update(
            sessions::table
                .filter(sessions::user_id.eq(user_id))
                .filter(sessions::ended_at.is_null())
                .filter(sessions::unit_id.ne_all(unit_ids)),
        )
        .set((
            sessions::ended_at.eq(now),
            sessions::end_reason.eq(EndReason::UnitDisabled),
        ))
        .execute(conn)
    })
}

/// The user with this username in the organisation, case-insensitively.
pub fn find_by_username(
    conn: &mut DbConnection,
    organisation_id: &str,
    username: &str,
) -> QueryResult<Option<User>> {
    users::table
        .filter(users::organisation_id.eq(organisation_id))
        .filter(users::username_key.eq(super::name_key(username)))
        .select(User::as_select())
        .get_result(conn)
        .optional()
}

/// A user with its organisation and its default unit (if it has one).
pub type UserWithOrganisation = (Organisation, User, Option<Unit>);

/// The user with this username in the organisation with this name (both case-insensitive), with the
/// organisation and the user's default unit, in one statement: all a password login reads before the hash.
pub fn find_with_organisation(
    conn: &mut DbConnection,
    organisation: &str,
    username: &str,
) -> QueryResult<Option<UserWithOrganisation>> {
    use super::schema::{organisations, units};
    users::table
        .inner_join(organisations::table.on(organisations::id.eq(users::organisation_id)))
        .left_join(
            user_units::table.on(user_units::user_id
                .eq(users::id)
                .and(user_units::is_default.eq(true))),
        )
        .left_join(units::table.on(units::id.eq(user_units::unit_id)))
        .filter(organisations::name_key.eq(super::name_key(organisation)))
        .filter(users::username_key.eq(super::name_key(username)))
        .select((
            Organisation::as_select(),
            User::as_select(),
            Option::<Unit>::as_select(),
        ))
        .get_result(conn)
        .optional()
}

/// The user with this id.
pub fn find_by_id(conn: &mut DbConnection, id: &str) -> QueryResult<Option<User>> {
    users::table
        .find(id)
        .select(User::as_select())
        .get_result(conn)
        .optional()
}

/// Replaces the password hash; returns the rows changed.
pub fn update_password(conn: &mut DbConnection, id: &str, hash: &str) -> QueryResult<usize> {
    diesel::update(users::table.find(id))
        .set(users::password_hash.eq(hash))
        .execute(conn)
}

/// Replaces the password hash only if it is still `old`; returns the rows changed (0 when the password was
/// changed meanwhile, which then stays).
pub fn update_password_from(conn: &mut DbConnection, id: &str, old: &str, new: &str) -> QueryResult<usize> {
    diesel::update(users::table.find(id).filter(users::password_hash.eq(old)))
        .set(users::password_hash.eq(new))
        .execute(conn)
}

/// Sets a user's role; returns the rows changed.
pub fn update_role(conn: &mut DbConnection, id: &str, role: Role) -> QueryResult<usize> {
    diesel::update(users::table.find(id))
        .set(users::role.eq(RoleColumn(role)))
        .execute(conn)
}

/// Enables or disables a user; returns the rows changed.
pub fn update_active(conn: &mut DbConnection, id: &str, is_active: bool) -> QueryResult<usize> {
    diesel::update(users::table.find(id))
        .set(users::is_active.eq(is_active))
        .execute(conn)
}

/// The user's default unit.
pub fn find_default_unit(conn: &mut DbConnection, user_id: &str) -> QueryResult<Option<Unit>> {
    use super::schema::units;
    user_units::table
        .inner_join(units::table)
        .filter(user_units::user_id.eq(user_id))
        .filter(user_units::is_default.eq(true))
        .select(Unit::as_select())
        .get_result(conn)
        .optional()
}

/// Whether the user is a member of the unit.
pub fn is_member(conn: &mut DbConnection, user_id: &str, unit_id: &str) -> QueryResult<bool> {
    user_units::table
        .find((user_id, unit_id))
        .select(user_units::is_default)
        .get_result::<bool>(conn)
        .optional()
        .map(|row| row.is_some())
}

/// The user's memberships.
pub fn find_memberships(conn: &mut DbConnection, user_id: &str) -> QueryResult<Vec<Membership>> {
    user_units::table
        .filter(user_units::user_id.eq(user_id))
        .select(Membership::as_select())
        .load(conn)
}

/// The id and username of every user of the organisation, for the look-alike warning of a new one.
pub fn all_names_in(conn: &mut DbConnection, organisation_id: &str) -> QueryResult<Vec<(String, String)>> {
    users::table
        .filter(users::organisation_id.eq(organisation_id))
        .select((users::id, users::username))
        .load(conn)
}

/// Up to `limit` users of an organisation, oldest first, after the cursor.
pub fn page_in(
    conn: &mut DbConnection,
    organisation_id: &str,
    after: super::After<'_>,
    limit: i64,
) -> QueryResult<Vec<User>> {
    let query = users::table
        .filter(users::organisation_id.eq(organisation_id.to_owned()))
        .into_boxed();
    let query = after_cursor!(query, users::created_at, users::id, after);
    query
        .order((users::created_at.asc(), users::id.asc()))
        .limit(limit)
        .select(User::as_select())
        .load(conn)
}

/// The units of each of these users, as `(user id, whether it is the user's default, unit)`, in one
/// statement.
pub fn units_of(conn: &mut DbConnection, user_ids: &[&str]) -> QueryResult<Vec<(String, bool, Unit)>> {
    use super::schema::units;
    user_units::table
        .inner_join(units::table.on(units::id.eq(user_units::unit_id)))
        .filter(user_units::user_id.eq_any(user_ids))
        .order((units::created_at.asc(), units::id.asc()))
        .select((user_units::user_id, user_units::is_default, Unit::as_select()))
        .load(conn)
}
