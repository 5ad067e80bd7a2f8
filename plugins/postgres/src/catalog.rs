//! What the source exposes: the tables and views of its schemas, and each one's columns with
//! their types, read from the system catalogs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use lodestar_connector_api::datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use tokio_postgres::Client;

use crate::error::{self, Error, Result};
use crate::settings::Target;
use crate::types::PgType;

/// A table or view and the columns Lodestar can read.
#[derive(Debug)]
pub struct TableInfo {
    pub schema: String,
    pub name: String,
    /// `r` table, `p` partitioned table, `v` view, `m` materialized view, `f` foreign table.
    pub relkind: u8,
    /// Pages on disk now (tables and materialized views; 0 for the rest).
    pub pages: i64,
    /// The planner's row estimate (-1 if never analyzed).
    pub rows: f64,
    pub columns: Vec<Column>,
    pub arrow: SchemaRef,
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub pg: PgType,
}

impl TableInfo {
    /// `"schema"."name"`, quoted for SQL.
    pub fn sql_name(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// `schema.name` for messages.
    pub fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// Whether its rows live in its own heap pages, so that ctid ranges split it.
    pub fn splittable(&self) -> bool {
        matches!(self.relkind, b'r' | b'm')
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// An identifier in double quotes, with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Checks that every schema exists; returns the tables and views of all of them, the first
/// schema's first when names repeat (later ones are hidden, as on a search_path).
pub async fn list_tables(
    client: &Client,
    target: &Target,
    schemas: &[String],
) -> Result<Vec<String>> {
    let found = client
        .query(
            "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname = ANY($1)",
            &[&schemas],
        )
        .await
        .map_err(|e| error::query(target, "listing schemas", &e))?;
    let found: HashSet<String> = found.iter().map(|r| r.get(0)).collect();
    if let Some(missing) = schemas.iter().find(|s| !found.contains(*s)) {
        return Err(Error::Invalid {
            target: target.to_string(),
            message: format!("schema `{missing}` does not exist"),
            hint: Some(
                "list the schemas to expose in `schemas` (they are case-sensitive: Postgres folds unquoted names to lower case)"
                    .into(),
            ),
        });
    }
    let rows = client
        .query(
            "SELECT c.relname FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
               AND NOT c.relispartition \
             ORDER BY array_position($1, n.nspname::text), c.relname",
            &[&schemas],
        )
        .await
        .map_err(|e| error::query(target, "listing tables", &e))?;
    let mut seen = HashSet::new();
    Ok(rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|name| seen.insert(name.clone()))
        .collect())
}

/// The table or view `name` in the first of `schemas` that has it, with its columns; `None`
/// if there is none.
pub async fn table(
    client: &Client,
    target: &Target,
    schemas: &[String],
    name: &str,
) -> Result<Option<TableInfo>> {
    let action = || format!("reading the definition of `{name}`");
    let row = client
        .query_opt(
            "SELECT c.oid, n.nspname, c.relkind, \
               CASE WHEN c.relkind IN ('r', 'm') \
                    THEN pg_catalog.pg_relation_size(c.oid) / current_setting('block_size')::int8 \
                    ELSE 0 END, \
               c.reltuples::float8 \
             FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = $2 AND n.nspname = ANY($1) \
               AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition \
             ORDER BY array_position($1, n.nspname::text) LIMIT 1",
            &[&schemas, &name],
        )
        .await
        .map_err(|e| error::query(target, action(), &e))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let oid: u32 = row.get(0);
    let schema: String = row.get(1);
    let relkind: i8 = row.get(2);
    let pages: i64 = row.get(3);
    let rows: f64 = row.get(4);

    let attributes = client
        .query(
            "SELECT a.attname, a.atttypid, a.atttypmod, a.attnotnull, \
                    pg_catalog.format_type(a.atttypid, a.atttypmod) \
             FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(|e| error::query(target, action(), &e))?;
    let oids: Vec<u32> = attributes.iter().map(|r| r.get(1)).collect();
    let types = TypeCatalog::load(client, target, &oids).await?;

    let mut columns = Vec::new();
    let mut fields = Vec::new();
    for attribute in &attributes {
        let column: String = attribute.get(0);
        let type_oid: u32 = attribute.get(1);
        let typmod: i32 = attribute.get(2);
        let not_null: bool = attribute.get(3);
        let type_name: String = attribute.get(4);
        match types.resolve(type_oid, typmod) {
            Some(pg) => {
                // A view's columns may hold nulls whatever its tables say.
                let nullable = !not_null || relkind as u8 == b'v';
                fields.push(Field::new(&column, pg.arrow_type(), nullable));
                columns.push(Column { name: column, pg });
            }
            None => warn_skipped(target, &schema, name, &column, &type_name),
        }
    }
    Ok(Some(TableInfo {
        schema,
        name: name.to_string(),
        relkind: relkind as u8,
        pages,
        rows,
        columns,
        arrow: Arc::new(Schema::new(fields)),
    }))
}

/// A column of a type not in the mapping is left out, with a warning on stderr once per process.
fn warn_skipped(target: &Target, schema: &str, table: &str, column: &str, type_name: &str) {
    static WARNED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let key = format!("{target}/{schema}.{table}.{column}");
    let first = WARNED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key);
    if first {
        eprintln!(
            "warning: {target}: table `{schema}.{table}`: column `{column}` has type {type_name}, which the postgres connector does not read; it is left out\n  hint: to use it, read the table through a view that casts it, e.g. `{column}::text`"
        );
    }
}

/// Rows of `pg_type` needed to resolve domains, enums and arrays.
struct TypeCatalog {
    rows: HashMap<u32, TypeRow>,
}

#[derive(Debug, Clone)]
struct TypeRow {
    typtype: u8,
    category: u8,
    element: u32,
    base: u32,
    base_typmod: i32,
}

impl TypeCatalog {
    /// Loads the rows of `oids` and of the types they are built on (at most a few levels: a
    /// domain over an array of a domain is as deep as real schemas go).
    async fn load(client: &Client, target: &Target, oids: &[u32]) -> Result<TypeCatalog> {
        let mut rows = HashMap::new();
        let mut wanted: Vec<u32> = oids.to_vec();
        for _ in 0..4 {
            wanted.retain(|oid| !rows.contains_key(oid) && PgType::builtin(*oid, -1).is_none());
            wanted.sort_unstable();
            wanted.dedup();
            if wanted.is_empty() {
                break;
            }
            let found = client
                .query(
                    "SELECT oid, typtype, typcategory, typelem, typbasetype, typtypmod \
                     FROM pg_catalog.pg_type WHERE oid = ANY($1)",
                    &[&wanted],
                )
                .await
                .map_err(|e| error::query(target, "reading column types", &e))?;
            wanted.clear();
            for r in found {
                let row = TypeRow {
                    typtype: r.get::<_, i8>(1) as u8,
                    category: r.get::<_, i8>(2) as u8,
                    element: r.get(3),
                    base: r.get(4),
                    base_typmod: r.get(5),
                };
                wanted.extend([row.element, row.base].into_iter().filter(|o| *o != 0));
                rows.insert(r.get(0), row);
            }
        }
        Ok(TypeCatalog { rows })
    }

    fn resolve(&self, oid: u32, typmod: i32) -> Option<PgType> {
        self.resolve_depth(oid, typmod, 0)
    }

    fn resolve_depth(&self, oid: u32, typmod: i32, depth: u8) -> Option<PgType> {
        if let Some(builtin) = PgType::builtin(oid, typmod) {
            return Some(builtin);
        }
        if depth > 4 {
            return None;
        }
        let row = self.rows.get(&oid)?;
        match (row.typtype, row.category) {
            // A domain reads as its base type, with the domain's modifier.
            (b'd', _) => {
                let typmod = if row.base_typmod >= 0 {
                    row.base_typmod
                } else {
                    typmod
                };
                self.resolve_depth(row.base, typmod, depth + 1)
            }
            (b'e', _) => Some(PgType::Enum),
            // An array of a scalar this connector reads; the column's modifier is its elements'.
            (b'b', b'A') if row.element != 0 => {
                match self.resolve_depth(row.element, typmod, depth + 1)? {
                    PgType::Array(_) => None,
                    element => Some(PgType::Array(Box::new(element))),
                }
            }
            _ => None,
        }
    }
}
