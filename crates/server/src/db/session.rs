//! Sessions: one per login, rotated by generation on refresh, ended by release, revocation or theft.

use std::fmt;

use crm_auth_core::AuthMethod;
use diesel::PgConnection;
use diesel::deserialize::FromSqlRow;
use diesel::dsl::AsSelect;
use diesel::expression::AsExpression;
use diesel::prelude::*;
use diesel::sql_types::Text;

use super::schema::{api_keys, organisations, sessions, units, user_units, users};
use super::{Db, DbConnection, PURGE_BATCH};

/// Why a session ended, stored in `sessions.end_reason` by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub enum EndReason {
    /// Its token was released (logout).
    Released,
    /// An administrator revoked it.
    Revoked,
    /// A superseded token came back after the reuse interval: taken as stolen.
    Reuse,
    /// Its user was disabled.
    UserDisabled,
    /// Its organisation was disabled.
    OrganisationDisabled,
    /// Its unit was disabled, or its user left the unit.
    UnitDisabled,
    /// The key that opened it was revoked.
    KeyRevoked,
}

impl EndReason {
    /// Every reason.
    pub const ALL: [EndReason; 7] = [
        EndReason::Released,
        EndReason::Revoked,
        EndReason::Reuse,
        EndReason::UserDisabled,
        EndReason::OrganisationDisabled,
        EndReason::UnitDisabled,
        EndReason::KeyRevoked,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Released => "released",
            EndReason::Revoked => "revoked",
            EndReason::Reuse => "reuse",
            EndReason::UserDisabled => "user_disabled",
            EndReason::OrganisationDisabled => "organisation_disabled",
            EndReason::UnitDisabled => "unit_disabled",
            EndReason::KeyRevoked => "key_revoked",
        }
    }

    /// The reason stored as `name`.
    pub fn from_name(name: &str) -> Option<EndReason> {
        EndReason::ALL.into_iter().find(|reason| reason.as_str() == name)
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `method` column: an [`AuthMethod`] by its wire name (core's type, which knows nothing of diesel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub struct MethodColumn(AuthMethod);

impl From<AuthMethod> for MethodColumn {
    fn from(method: AuthMethod) -> MethodColumn {
        MethodColumn(method)
    }
}

impl From<MethodColumn> for AuthMethod {
    fn from(MethodColumn(method): MethodColumn) -> AuthMethod {
        method
    }
}

text_column!(EndReason, |reason| reason.as_str(), EndReason::from_name);
text_column!(MethodColumn, |method| method.0.as_str(), |name| name
    .parse()
    .ok()
    .map(MethodColumn));

/// A stored session. The current token is reproducible from it: `jti` = `id`, `generation`, `iat` = `rotated_at`,
/// `exp` = `expires_at`, the names, and the unit's id or code for `token.unit_claim`.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = sessions)]
pub struct Session {
    /// The session id, the token's `jti`.
    pub id: String,
    /// The organisation.
    pub organisation_id: String,
    /// The user.
    pub user_id: String,
    /// The unit logged into.
    pub unit_id: String,
    /// The key that opened it, for key sessions.
    pub api_key_id: Option<String>,
    /// How it was opened.
    #[diesel(serialize_as = MethodColumn, deserialize_as = MethodColumn)]
    pub method: AuthMethod,
    /// The token's `usr`.
    pub username: String,
    /// The token's `org`.
    pub organisation_name: String,
    /// The unit's name, the token's `oun` unless `token.unit_claim` says otherwise.
    pub unit_name: String,
    /// Unix seconds.
    pub created_at: i64,
    /// The newest token's generation.
    pub generation: i64,
    /// The newest token's `iat`: when it was issued.
    pub rotated_at: i64,
    /// The newest token's `exp`.
    pub expires_at: i64,
    /// No token of the session outlives this.
    pub max_end_at: i64,
    /// When the session ended, if it did.
    pub ended_at: Option<i64>,
    /// Why it ended.
    pub end_reason: Option<EndReason>,
    /// When it was last refreshed (rotated); `None` until its first refresh.
    pub refreshed_at: Option<i64>,
    /// The client address it logged in from (`None` for sessions older than this column).
    pub client: Option<String>,
    /// The unit's code, the token's `oun` under `token.unit_claim = "code"` (`None` for a unit without one,
    /// and for sessions older than this column: their `oun` is then the name).
    pub unit_code: Option<String>,
}

/// Inserts a session.
pub fn create(conn: &mut DbConnection, session: &Session) -> QueryResult<()> {
    // Owned: the method column converts on the way in, which diesel does for owned values only.
    diesel::insert_into(sessions::table)
        .values(session.clone())
        .execute(conn)
        .map(drop)
}

/// The session with this id.
pub fn find_by_id(conn: &mut DbConnection, id: &str) -> QueryResult<Option<Session>> {
    sessions::table
        .find(id)
        .select(Session::as_select())
        .get_result(conn)
        .optional()
}

/// Moves a live session from generation `from_gen` to the next one. Returns whether this call did it: of
/// any number of concurrent callers with the same `from_gen`, exactly one succeeds.
pub fn update_rotate(
    conn: &mut DbConnection,
    id: &str,
    from_gen: i64,
    now: i64,
    expires_at: i64,
) -> QueryResult<bool> {
    diesel::update(
        sessions::table
            .find(id)
            .filter(sessions::generation.eq(from_gen))
            .filter(sessions::ended_at.is_null()),
    )
    .set((
        sessions::generation.eq(from_gen + 1),
        sessions::rotated_at.eq(now),
        sessions::expires_at.eq(expires_at),
        sessions::refreshed_at.eq(now),
    ))
    .execute(conn)
    .map(|rows| rows == 1)
}

/// Ends a live session; returns whether it was live.
pub fn update_end(conn: &mut DbConnection, id: &str, now: i64, reason: EndReason) -> QueryResult<bool> {
    diesel::update(sessions::table.find(id).filter(sessions::ended_at.is_null()))
        .set((sessions::ended_at.eq(now), sessions::end_reason.eq(reason)))
        .execute(conn)
        .map(|rows| rows == 1)
}

/// Why a stored session is past retention; each is deleted through its own index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PastRetention {
    /// Its maximum lifetime (`max_end_at`) ended before the cutoff, whether or not it ended earlier.
    Lifetime,
    /// It ended (`ended_at`) before the cutoff.
    Ended,
}

/// Deletes at most [`PURGE_BATCH`] sessions that are past retention for `why` at `cutoff` (`now` less the
/// retention); returns how many. Fewer than [`PURGE_BATCH`] means none is left.
pub fn delete_past_retention(conn: &mut DbConnection, why: PastRetention, cutoff: i64) -> QueryResult<usize> {
    use diesel::sql_types::BigInt;

    // diesel's query builder takes no LIMIT in a DELETE's subquery; the SQL is the same on both backends but
    // for the placeholders.
    let sql = match (why, &*conn) {
        (PastRetention::Lifetime, DbConnection::Postgres(_)) => {
            "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE max_end_at < $1 LIMIT $2)"
        }
        (PastRetention::Lifetime, DbConnection::Sqlite(_)) => {
            "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE max_end_at < ? LIMIT ?)"
        }
        (PastRetention::Ended, DbConnection::Postgres(_)) => {
            "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE ended_at < $1 LIMIT $2)"
        }
        (PastRetention::Ended, DbConnection::Sqlite(_)) => {
            "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE ended_at < ? LIMIT ?)"
        }
    };
    diesel::sql_query(sql)
        .bind::<BigInt, _>(cutoff)
        .bind::<BigInt, _>(PURGE_BATCH)
        .execute(conn)
}

/// How many sessions are past retention at `cutoff`, for either reason.
pub fn count_past_retention(conn: &mut DbConnection, cutoff: i64) -> QueryResult<i64> {
    sessions::table
        .filter(sessions::max_end_at.lt(cutoff).or(sessions::ended_at.lt(cutoff)))
        .count()
        .get_result(conn)
}

/// What a revocation ends the live sessions of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    /// A user, by id.
    User(&'a str),
    /// A Web API key, by id: the sessions it opened.
    Key(&'a str),
    /// An organisation, by id.
    Organisation(&'a str),
    /// A unit, by id: the sessions logged into it.
    Unit(&'a str),
}

/// Ends every live session of `owner`; returns how many.
pub fn update_end_for(
    conn: &mut DbConnection,
    owner: Owner<'_>,
    now: i64,
    reason: EndReason,
) -> QueryResult<usize> {
    let end = diesel::update(sessions::table.filter(sessions::ended_at.is_null()))
        .set((sessions::ended_at.eq(now), sessions::end_reason.eq(reason)))
        .into_boxed::<Db>();
    match owner {
        Owner::User(id) => end.filter(sessions::user_id.eq(id)),
        Owner::Key(id) => end.filter(sessions::api_key_id.eq(id)),
        Owner::Organisation(id) => end.filter(sessions::organisation_id.eq(id)),
        Owner::Unit(id) => end.filter(sessions::unit_id.eq(id)),
    }
    .execute(conn)
}

/// The live sessions of an organisation, optionally of one user, newest first.
pub fn find_live(
    conn: &mut DbConnection,
    organisation_id: &str,
    user_id: Option<&str>,
    now: i64,
) -> QueryResult<Vec<Session>> {
    let mut query = sessions::table
        .filter(sessions::organisation_id.eq(organisation_id))
        .filter(sessions::ended_at.is_null())
        .filter(sessions::max_end_at.gt(now))
        .into_boxed();
    if let Some(user_id) = user_id {
        query = query.filter(sessions::user_id.eq(user_id));
    }
    query
        .order(sessions::created_at.desc())
        .select(Session::as_select())
        .load(conn)
}

/// What a session stands on, read in one statement: whether its user, organisation and unit are active, the
/// user still a member of the unit, and the key that opened it (if any) unrevoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The user exists and is active.
    pub user_active: bool,
    /// The organisation exists and is active.
    pub organisation_active: bool,
    /// The unit exists and is active.
    pub unit_active: bool,
    /// The user is a member of the unit.
    pub is_member: bool,
    /// The session was opened by a password, or by a key that exists and is unrevoked.
    pub key_live: bool,
}

impl Standing {
    /// The end reason this standing calls for, if the session may not go on.
    pub fn end_reason(self) -> Option<EndReason> {
        if !self.user_active {
            Some(EndReason::UserDisabled)
        } else if !self.organisation_active {
            Some(EndReason::OrganisationDisabled)
        } else if !self.unit_active || !self.is_member {
            Some(EndReason::UnitDisabled)
        } else if !self.key_live {
            Some(EndReason::KeyRevoked)
        } else {
            None
        }
    }
}

/// A session row with what its standing is read from: the user's, organisation's and unit's `is_active`, the
/// membership's user id and the key's id and `revoked_at` (each `None` when the row is missing).
type StandingRow = (
    Session,
    Option<bool>,
    Option<bool>,
    Option<bool>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

/// Sessions, each joined with what it stands on: its user, organisation, unit, membership and key.
#[diesel::dsl::auto_type(no_type_alias)]
fn joined_with_standing() -> _ {
    sessions::table
        .left_join(users::table.on(users::id.eq(sessions::user_id)))
        .left_join(organisations::table.on(organisations::id.eq(sessions::organisation_id)))
        .left_join(units::table.on(units::id.eq(sessions::unit_id)))
        .left_join(
            user_units::table.on(user_units::user_id
                .eq(sessions::user_id)
                .and(user_units::unit_id.eq(sessions::unit_id))),
        )
        .left_join(api_keys::table.on(api_keys::id.nullable().eq(sessions::api_key_id)))
}

/// What [`joined_with_standing`] selects, as a [`StandingRow`].
#[diesel::dsl::auto_type(no_type_alias)]
fn standing_columns() -> _ {
    let session: AsSelect<Session, Db> = Session::as_select();
    (
        session,
        users::is_active.nullable(),
        organisations::is_active.nullable(),
        units::is_active.nullable(),
        user_units::user_id.nullable(),
        api_keys::id.nullable(),
        api_keys::revoked_at.nullable(),
    )
}

/// Reads a [`StandingRow`].
fn with_standing(
    (session, user, organisation, unit, member, key, revoked_at): StandingRow,
) -> (Session, Standing) {
    let standing = Standing {
        user_active: user == Some(true),
        organisation_active: organisation == Some(true),
        unit_active: unit == Some(true),
        is_member: member.is_some(),
        key_live: session.api_key_id.is_none() || (key.is_some() && revoked_at.is_none()),
    };
    (session, standing)
}

/// The session with this id and its [`Standing`], in one statement (refresh's first read).
pub fn find_with_standing(conn: &mut DbConnection, id: &str) -> QueryResult<Option<(Session, Standing)>> {
    let row = joined_with_standing()
        .filter(sessions::id.eq(id))
        .select(standing_columns())
        .get_result::<StandingRow>(conn)
        .optional()?;
    Ok(row.map(with_standing))
}

/// [`find_with_standing`] for many ids in one statement (`= ANY($1)` on PostgreSQL); ids not found are left
/// out.
///
/// On PostgreSQL, which plans every run (see `plan_cache_mode` in `db`), the standing is read with a subquery
/// per row it stands on: about 0.1 ms to plan, against about 0.4 ms for the join of six tables that SQLite
/// runs. Refresh's first read and the re-check of new sessions run it once per batch.
pub fn find_many_with_standing(
    conn: &mut DbConnection,
    ids: &[&str],
) -> QueryResult<Vec<(Session, Standing)>> {
    use diesel::sql_types::{Array, BigInt, Bool, Nullable};

    /// A [`StandingRow`] as the subqueries read it.
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(embed)]
        session: Session,
        #[diesel(sql_type = Nullable<Bool>)]
        user_active: Option<bool>,
        #[diesel(sql_type = Nullable<Bool>)]
        organisation_active: Option<bool>,
        #[diesel(sql_type = Nullable<Bool>)]
        unit_active: Option<bool>,
        #[diesel(sql_type = Nullable<Text>)]
        member: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        key_id: Option<String>,
        #[diesel(sql_type = Nullable<BigInt>)]
        key_revoked_at: Option<i64>,
    }

    let DbConnection::Postgres(pg) = conn else {
        let rows = joined_with_standing()
            .filter(sessions::id.eq_any(ids))
            .select(standing_columns())
            .load::<StandingRow>(conn)?;
        return Ok(rows.into_iter().map(with_standing).collect());
    };
    let found = diesel::sql_query(
        "SELECT s.*, \
         (SELECT is_active FROM users WHERE id = s.user_id) AS user_active, \
         (SELECT is_active FROM organisations WHERE id = s.organisation_id) AS organisation_active, \
         (SELECT is_active FROM units WHERE id = s.unit_id) AS unit_active, \
         (SELECT user_id FROM user_units WHERE user_id = s.user_id AND unit_id = s.unit_id) AS member, \
         (SELECT id FROM api_keys WHERE id = s.api_key_id) AS key_id, \
         (SELECT revoked_at FROM api_keys WHERE id = s.api_key_id) AS key_revoked_at \
         FROM sessions s WHERE s.id = ANY($1)",
    )
    .bind::<Array<Text>, _>(ids)
    .load::<Found>(pg)?;
    Ok(found
        .into_iter()
        .map(|f| {
            with_standing((
                f.session,
                f.user_active,
                f.organisation_active,
                f.unit_active,
                f.member,
                f.key_id,
                f.key_revoked_at,
            ))
        })
        .collect())
}

/// Waits for every revocation in progress on the rows these new sessions stand on (their users,
/// organisations, units and keys) by taking, and at once releasing, a shared lock on each, in one statement.
///
/// A revocation (`user disable`, `key revoke`, ...) updates the row it revokes, which locks it, before it ends
/// that row's sessions, in one transaction. So once this returns, either the revocation has committed, and the
/// standing read after this sees it, or it had not locked its row yet, and its update of the sessions starts
/// after this statement, so after the sessions' commit, and ends them itself. Under read committed, a standing
/// read without this lock could read the row before a revocation commits while the revocation's update of the
/// sessions had started before the insert committed: the session would outlive the revocation.
pub fn lock_standing(conn: &mut PgConnection, rows: &[&Session]) -> QueryResult<()> {
    use diesel::sql_types::{Array, Text};

    let ids = |of: fn(&Session) -> Option<&str>| rows.iter().filter_map(|row| of(row)).collect::<Vec<_>>();
    diesel::sql_query(
        "SELECT \
         (SELECT count(*) FROM (SELECT 1 FROM users WHERE id = ANY($1) FOR SHARE) AS u) + \
         (SELECT count(*) FROM (SELECT 1 FROM organisations WHERE id = ANY($2) FOR SHARE) AS o) + \
         (SELECT count(*) FROM (SELECT 1 FROM units WHERE id = ANY($3) FOR SHARE) AS n) + \
         (SELECT count(*) FROM (SELECT 1 FROM api_keys WHERE id = ANY($4) FOR SHARE) AS k)",
    )
    .bind::<Array<Text>, _>(ids(|row| Some(row.user_id.as_str())))
    .bind::<Array<Text>, _>(ids(|row| Some(row.organisation_id.as_str())))
    .bind::<Array<Text>, _>(ids(|row| Some(row.unit_id.as_str())))
    .bind::<Array<Text>, _>(ids(|row| row.api_key_id.as_deref()))
    .execute(conn)
    .map(drop)
}

/// The sessions with these ids, in one statement; ids not found are left out.
pub fn find_many(conn: &mut DbConnection, ids: &[&str]) -> QueryResult<Vec<Session>> {
    sessions::table
        .filter(sessions::id.eq_any(ids))
        .select(Session::as_select())
        .load(conn)
}

/// Inserts many sessions with one PostgreSQL statement: all or none.
pub fn create_many(conn: &mut PgConnection, rows: &[Session]) -> QueryResult<()> {
    diesel::insert_into(sessions::table)
        .values(rows.to_vec())
        .execute(conn)
        .map(drop)
}

/// Inserts many sessions with one statement on either backend (diesel builds multi-row inserts for a concrete
/// connection only): all or none.
pub fn create_batch(conn: &mut DbConnection, rows: &[Session]) -> QueryResult<()> {
    match conn {
        DbConnection::Postgres(c) => create_many(c, rows),
        DbConnection::Sqlite(c) => diesel::insert_into(sessions::table)
            .values(rows.to_vec())
            .execute(c)
            .map(drop),
    }
}

/// One compare-and-set of [`update_rotate`], to run with others in [`update_rotate_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The session.
    pub id: String,
    /// The generation the caller presented.
    pub from_gen: i64,
    /// The new token's `iat`.
    pub now: i64,
    /// The new token's `exp`.
    pub expires_at: i64,
}

/// [`update_rotate`] for many sessions in one PostgreSQL statement (committed together); returns the ids of
/// the (id, generation) of each session it moved. Give each (id, generation) once.
pub fn update_rotate_many(
    conn: &mut PgConnection,
    rotations: &[Rotation],
) -> QueryResult<Vec<(String, i64)>> {
    use diesel::sql_types::{Array, BigInt, Text};

    #[derive(QueryableByName)]
    struct Rotated {
        #[diesel(sql_type = Text)]
        id: String,
        #[diesel(sql_type = BigInt)]
        from_gen: i64,
    }

    let ids: Vec<&str> = rotations.iter().map(|r| r.id.as_str()).collect();
    let from: Vec<i64> = rotations.iter().map(|r| r.from_gen).collect();
    let now: Vec<i64> = rotations.iter().map(|r| r.now).collect();
    let expires: Vec<i64> = rotations.iter().map(|r| r.expires_at).collect();
    let rotated = diesel::sql_query(
        "UPDATE sessions SET generation = v.from_gen + 1, rotated_at = v.now, expires_at = v.expires_at, \
         refreshed_at = v.now \
         FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[]) AS v(id, from_gen, now, expires_at) \
         WHERE sessions.id = v.id AND sessions.generation = v.from_gen AND sessions.ended_at IS NULL \
         RETURNING sessions.id, v.from_gen",
    )
    .bind::<Array<Text>, _>(ids)
    .bind::<Array<BigInt>, _>(from)
    .bind::<Array<BigInt>, _>(now)
    .bind::<Array<BigInt>, _>(expires)
    .load::<Rotated>(conn)?;
    Ok(rotated.into_iter().map(|r| (r.id, r.from_gen)).collect())
}

/// Up to `limit` live sessions of an organisation (of one user, if given), oldest first, after the cursor.
pub fn page_live(
    conn: &mut DbConnection,
    (organisation_id, user_id): (&str, Option<&str>),
    now: i64,
    after: super::After<'_>,
    limit: i64,
) -> QueryResult<Vec<Session>> {
    let mut query = sessions::table
        .filter(sessions::organisation_id.eq(organisation_id.to_owned()))
        .filter(sessions::ended_at.is_null())
        .filter(sessions::max_end_at.gt(now))
        .into_boxed();
    if let Some(user_id) = user_id {
        query = query.filter(sessions::user_id.eq(user_id.to_owned()));
    }
    let query = after_cursor!(query, sessions::created_at, sessions::id, after);
    query
        .order((sessions::created_at.asc(), sessions::id.asc()))
        .limit(limit)
        .select(Session::as_select())
        .load(conn)
}
