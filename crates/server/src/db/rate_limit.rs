//! The shared rate limit's counts: requests per client address and second, added up by every node
//! (`http.rate_limit.shared`). See [`crate::ratelimit`] for how a node uses them.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::upsert::excluded;

use super::DbConnection;
use super::schema::rate_limit_hits;

/// The most clients one lookup binds: well under SQLite's 32,766 bound parameters.
const LOOKUP_BATCH: usize = 1_000;

/// Adds `hits` requests of `client` in the second `slot` to the count of every node.
pub fn add(conn: &mut DbConnection, client: &str, slot: i64, hits: i64) -> QueryResult<()> {
    let row = (
        rate_limit_hits::client.eq(client),
        rate_limit_hits::slot.eq(slot),
        rate_limit_hits::hits.eq(hits),
    );
    let insert = diesel::insert_into(rate_limit_hits::table).values(row);
    let add_up = rate_limit_hits::hits.eq(rate_limit_hits::hits + excluded(rate_limit_hits::hits));
    match conn {
        DbConnection::Postgres(pg) => insert
            .on_conflict((rate_limit_hits::client, rate_limit_hits::slot))
            .do_update()
            .set(add_up)
            .execute(pg),
        DbConnection::Sqlite(sqlite) => insert
            .on_conflict((rate_limit_hits::client, rate_limit_hits::slot))
            .do_update()
            .set(add_up)
            .execute(sqlite),
    }
    .map(drop)
}

/// Each client's requests counted by every node in the seconds after `after_slot`.
pub fn totals(
    conn: &mut DbConnection,
    clients: &[String],
    after_slot: i64,
) -> QueryResult<HashMap<String, i64>> {
    let mut totals = HashMap::with_capacity(clients.len());
    for chunk in clients.chunks(LOOKUP_BATCH) {
        let rows: Vec<(String, i64)> = rate_limit_hits::table
            .filter(rate_limit_hits::client.eq_any(chunk))
            .filter(rate_limit_hits::slot.gt(after_slot))
            .select((rate_limit_hits::client, rate_limit_hits::hits))
            .load(conn)?;
        for (client, hits) in rows {
            *totals.entry(client).or_insert(0) += hits;
        }
    }
    for client in clients {
        totals.entry(client.clone()).or_insert(0);
    }
    Ok(totals)
}

/// Deletes the counts of the seconds up to `slot`; returns how many rows went.
pub fn forget_until(conn: &mut DbConnection, slot: i64) -> QueryResult<usize> {
    diesel::delete(rate_limit_hits::table.filter(rate_limit_hits::slot.le(slot))).execute(conn)
}
