//! Sessions: one per login, rotated by generation on refresh, ended by release, revocation or theft.

use diesel::prelude::*;

use super::DbConnection;
use super::schema::sessions;

/// A stored session. The current token is reproducible from it: `jti` = `id`, `generation`, `iat` = `rotated_at`,
/// `exp` = `expires_at`, and the names.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
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
    /// `password` or `web_api_key`.
    pub method: String,
    /// The token's `usr`.
    pub username: String,
    /// The token's `org`.
    pub organisation_name: String,
    /// The token's `oun`.
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
    /// Why it ended: `released`, `revoked`, `reuse`, `user_disabled`, `key_revoked`, ...
    pub end_reason: Option<String>,
}

/// Inserts a session.
pub fn create(conn: &mut DbConnection, session: &Session) -> QueryResult<()> {
    diesel::insert_into(sessions::table)
        .values(session)
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
    ))
    .execute(conn)
    .map(|rows| rows == 1)
}

/// Ends a live session; returns whether it was live.
pub fn update_end(conn: &mut DbConnection, id: &str, now: i64, reason: &str) -> QueryResult<bool> {
    diesel::update(sessions::table.find(id).filter(sessions::ended_at.is_null()))
        .set((sessions::ended_at.eq(now), sessions::end_reason.eq(reason)))
        .execute(conn)
        .map(|rows| rows == 1)
}

/// Ends every live session of a user; returns how many.
pub fn update_end_for_user(
    conn: &mut DbConnection,
    user_id: &str,
    now: i64,
    reason: &str,
) -> QueryResult<usize> {
    diesel::update(
        sessions::table
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::ended_at.is_null()),
    )
    .set((sessions::ended_at.eq(now), sessions::end_reason.eq(reason)))
    .execute(conn)
}

/// Ends every live session opened by a key; returns how many.
pub fn update_end_for_key(
    conn: &mut DbConnection,
    key_id: &str,
    now: i64,
    reason: &str,
) -> QueryResult<usize> {
    diesel::update(
        sessions::table
            .filter(sessions::api_key_id.eq(key_id))
            .filter(sessions::ended_at.is_null()),
    )
    .set((sessions::ended_at.eq(now), sessions::end_reason.eq(reason)))
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

/// Reads the session's [`Standing`] in one round trip.
pub fn find_standing(conn: &mut DbConnection, session: &Session) -> QueryResult<Standing> {
    use super::schema::{api_keys, organisations, units, user_units, users};
    use diesel::dsl::exists;

    let user = exists(
        users::table
            .filter(users::id.eq(&session.user_id))
            .filter(users::is_active.eq(true)),
    );
    let organisation = exists(
        organisations::table
            .filter(organisations::id.eq(&session.organisation_id))
            .filter(organisations::is_active.eq(true)),
    );
    let unit = exists(
        units::table
            .filter(units::id.eq(&session.unit_id))
            .filter(units::is_active.eq(true)),
    );
    let member = exists(
        user_units::table
            .filter(user_units::user_id.eq(&session.user_id))
            .filter(user_units::unit_id.eq(&session.unit_id)),
    );
    let (user_active, organisation_active, unit_active, is_member, key_live) = match &session.api_key_id {
        Some(key_id) => {
            let key = exists(
                api_keys::table
                    .filter(api_keys::id.eq(key_id))
                    .filter(api_keys::revoked_at.is_null()),
            );
            diesel::select((user, organisation, unit, member, key)).get_result(conn)?
        }
        None => {
            let (u, o, n, m) = diesel::select((user, organisation, unit, member)).get_result(conn)?;
            (u, o, n, m, true)
        }
    };
    Ok(Standing {
        user_active,
        organisation_active,
        unit_active,
        is_member,
        key_live,
    })
}

/// The session with this id and its [`Standing`], in one statement (refresh's first read).
pub fn find_with_standing(conn: &mut DbConnection, id: &str) -> QueryResult<Option<(Session, Standing)>> {
    use super::schema::{api_keys, organisations, units, user_units, users};

    let row = sessions::table
        .left_join(users::table.on(users::id.eq(sessions::user_id)))
        .left_join(organisations::table.on(organisations::id.eq(sessions::organisation_id)))
        .left_join(units::table.on(units::id.eq(sessions::unit_id)))
        .left_join(
            user_units::table.on(user_units::user_id
                .eq(sessions::user_id)
                .and(user_units::unit_id.eq(sessions::unit_id))),
        )
        .left_join(api_keys::table.on(api_keys::id.nullable().eq(sessions::api_key_id)))
        .filter(sessions::id.eq(id))
        .select((
            Session::as_select(),
            users::is_active.nullable(),
            organisations::is_active.nullable(),
            units::is_active.nullable(),
            user_units::user_id.nullable(),
            api_keys::id.nullable(),
            api_keys::revoked_at.nullable(),
        ))
        .get_result::<(
            Session,
            Option<bool>,
            Option<bool>,
            Option<bool>,
            Option<String>,
            Option<String>,
            Option<i64>,
        )>(conn)
        .optional()?;
    Ok(
        row.map(|(session, user, organisation, unit, member, key, revoked_at)| {
            let standing = Standing {
                user_active: user == Some(true),
                organisation_active: organisation == Some(true),
                unit_active: unit == Some(true),
                is_member: member.is_some(),
                key_live: session.api_key_id.is_none() || (key.is_some() && revoked_at.is_none()),
            };
            (session, standing)
        }),
    )
}
