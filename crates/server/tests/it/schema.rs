//! `db/schema.rs` against the migrations: once every migration has run, each backend has exactly the tables and
//! columns schema.rs declares, in its order, with the same types, nullability and primary keys. schema.rs is
//! written by hand for both backends, so this is what keeps it from drifting from the migrations.

use crate::common::{Backend, TestDb};
use crm_auth_server::db::{self, DbConnection};
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};

backend_tests!(schema_rs_matches_the_migrated_database);

/// One column, as schema.rs declares it or as the database describes it.
#[derive(Debug, PartialEq, Eq, QueryableByName)]
struct Column {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    /// The SQL type, lower case: `text`, `bigint`, `boolean`, `integer`.
    #[diesel(sql_type = Text)]
    column_type: String,
    #[diesel(sql_type = Bool)]
    nullable: bool,
    #[diesel(sql_type = Bool)]
    primary_key: bool,
}

/// The SQL type a diesel type of schema.rs stands for.
fn sql_type(diesel_type: &str) -> anyhow::Result<&'static str> {
    Ok(match diesel_type {
        "Text" => "text",
        "BigInt" => "bigint",
        "Bool" => "boolean",
        "Integer" => "integer",
        other => anyhow::bail!("schema.rs uses {other}, which this test does not map yet"),
    })
}

/// The columns of every `diesel::table!` in schema.rs, table by table in file order.
fn declared() -> anyhow::Result<Vec<Column>> {
    let source = include_str!("../../src/db/schema.rs");
    let mut columns = Vec::new();
    for block in source.split("diesel::table! {").skip(1) {
        let (head, body) = block
            .split_once('{')
            .ok_or_else(|| anyhow::anyhow!("a table! without columns"))?;
        let (table, keys) = head
            .trim()
            .split_once('(')
            .ok_or_else(|| anyhow::anyhow!("a table! without a primary key: {head}"))?;
        let keys: Vec<&str> = keys.trim_end_matches(')').split(',').map(str::trim).collect();
        let body = body.split('}').next().unwrap_or_default();
        for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (name, ty) = line
                .trim_end_matches(',')
                .split_once("->")
                .ok_or_else(|| anyhow::anyhow!("cannot read the column {line:?}"))?;
            let (name, ty) = (name.trim(), ty.trim());
            let inner = ty.strip_prefix("Nullable<").and_then(|t| t.strip_suffix('>'));
            columns.push(Column {
                table_name: table.trim().to_owned(),
                column_name: name.to_owned(),
                column_type: sql_type(inner.unwrap_or(ty))?.to_owned(),
                nullable: inner.is_some(),
                primary_key: keys.contains(&name),
            });
        }
    }
    anyhow::ensure!(!columns.is_empty(), "no table found in schema.rs");
    Ok(columns)
}

/// The columns of every table of the migrated database but diesel's own, in schema.rs's table order and each
/// table's column order.
fn migrated(conn: &mut DbConnection, table_order: &[&str]) -> anyhow::Result<Vec<Column>> {
    let query = match conn {
        DbConnection::Sqlite(_) => {
            "SELECT m.name AS table_name, p.name AS column_name, lower(p.type) AS column_type, \
                    p.\"notnull\" = 0 AND p.pk = 0 AS nullable, p.pk > 0 AS primary_key \
             FROM sqlite_master m JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
               AND m.name <> '__diesel_schema_migrations' \
             ORDER BY m.name, p.cid"
        }
        DbConnection::Postgres(_) => {
            "SELECT c.table_name::text AS table_name, c.column_name::text AS column_name, \
                    c.data_type::text AS column_type, c.is_nullable = 'YES' AS nullable, \
                    EXISTS (SELECT 1 FROM information_schema.table_constraints t \
                            JOIN information_schema.key_column_usage k \
                              ON k.constraint_name = t.constraint_name AND k.table_name = t.table_name \
                            WHERE t.constraint_type = 'PRIMARY KEY' AND t.table_name = c.table_name \
                              AND k.column_name = c.column_name) AS primary_key \
             FROM information_schema.columns c \
             WHERE c.table_schema = current_schema() AND c.table_name <> '__diesel_schema_migrations' \
             ORDER BY c.table_name, c.ordinal_position"
        }
    };
    let mut columns: Vec<Column> = diesel::sql_query(query).load(conn)?;
    // Tables the schema does not know sort last, where the comparison shows them.
    columns.sort_by_key(|c| {
        table_order
            .iter()
            .position(|t| *t == c.table_name)
            .unwrap_or(usize::MAX)
    });
    Ok(columns)
}

async fn schema_rs_matches_the_migrated_database(backend: Backend) -> anyhow::Result<()> {
    let test_db = TestDb::new(&backend)?;
    let mut conn = test_db.manager()?.establish()?;
    db::run_migrations(&mut conn)?;
    let declared = declared()?;
    let mut tables: Vec<&str> = declared.iter().map(|c| c.table_name.as_str()).collect();
    tables.dedup();
    assert_eq!(migrated(&mut conn, &tables)?, declared);
    Ok(())
}
