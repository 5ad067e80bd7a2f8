//! Export lines into rows of `events`: the schema, the parsing of one JSON line, the
//! deduplication on `device_id` + `$insert_id`, and the Arrow batches.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime};
use flate2::read::MultiGzDecoder;
use lodestar_connector_api::datafusion::arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use lodestar_connector_api::datafusion::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit,
};
use lodestar_connector_api::serde_json::{Map, Value};

use crate::options::{BadLines, Flattened};

/// Which properties object a flattened column reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Event,
    User,
    Group,
}

impl Scope {
    fn key(self) -> &'static str {
        match self {
            Scope::Event => "event_properties",
            Scope::User => "user_properties",
            Scope::Group => "group_properties",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A timestamp written as text, kept as a UTC timestamp without zone.
    Time,
    Text,
    Int,
    Float,
    /// An object (properties), kept as its JSON text.
    Json,
}

/// The columns of `events`: name, the export's key, and kind. `event_time`, `session_id`,
/// `insert_id` and `distinct_id` have rules of their own (see [`Row`]).
const COLUMNS: &[(&str, &str, Kind)] = &[
    ("event_time", "event_time", Kind::Time),
    ("server_upload_time", "server_upload_time", Kind::Time),
    ("client_event_time", "client_event_time", Kind::Time),
    ("client_upload_time", "client_upload_time", Kind::Time),
    ("server_received_time", "server_received_time", Kind::Time),
    ("processed_time", "processed_time", Kind::Time),
    ("user_creation_time", "user_creation_time", Kind::Time),
    ("event_type", "event_type", Kind::Text),
    ("user_id", "user_id", Kind::Text),
    ("device_id", "device_id", Kind::Text),
    ("distinct_id", "", Kind::Text),
    ("amplitude_id", "amplitude_id", Kind::Int),
    ("session_id", "session_id", Kind::Int),
    ("insert_id", "$insert_id", Kind::Text),
    ("event_id", "event_id", Kind::Int),
    ("uuid", "uuid", Kind::Text),
    ("app", "app", Kind::Int),
    ("platform", "platform", Kind::Text),
    ("os_name", "os_name", Kind::Text),
    ("os_version", "os_version", Kind::Text),
    ("device_brand", "device_brand", Kind::Text),
    ("device_manufacturer", "device_manufacturer", Kind::Text),
    ("device_model", "device_model", Kind::Text),
    ("device_family", "device_family", Kind::Text),
    ("device_type", "device_type", Kind::Text),
    ("device_carrier", "device_carrier", Kind::Text),
    ("country", "country", Kind::Text),
    ("region", "region", Kind::Text),
    ("city", "city", Kind::Text),
    ("dma", "dma", Kind::Text),
    ("language", "language", Kind::Text),
    ("version_name", "version_name", Kind::Text),
    ("start_version", "start_version", Kind::Text),
    ("library", "library", Kind::Text),
    ("ip_address", "ip_address", Kind::Text),
    ("location_lat", "location_lat", Kind::Float),
    ("location_lng", "location_lng", Kind::Float),
    ("sample_rate", "sample_rate", Kind::Float),
    ("event_properties", "event_properties", Kind::Json),
    ("user_properties", "user_properties", Kind::Json),
    ("group_properties", "group_properties", Kind::Json),
    ("groups", "groups", Kind::Json),
];

/// The names of the built-in columns, in order.
pub const BUILTIN_COLUMNS: &[&str] = &[
    "event_time",
    "server_upload_time",
    "client_event_time",
    "client_upload_time",
    "server_received_time",
    "processed_time",
    "user_creation_time",
    "event_type",
    "user_id",
    "device_id",
    "distinct_id",
    "amplitude_id",
    "session_id",
    "insert_id",
    "event_id",
    "uuid",
    "app",
    "platform",
    "os_name",
    "os_version",
    "device_brand",
    "device_manufacturer",
    "device_model",
    "device_family",
    "device_type",
    "device_carrier",
    "country",
    "region",
    "city",
    "dma",
    "language",
    "version_name",
    "start_version",
    "library",
    "ip_address",
    "location_lat",
    "location_lng",
    "sample_rate",
    "event_properties",
    "user_properties",
    "group_properties",
    "groups",
];

/// Index of `event_time` and `server_upload_time` in [`COLUMNS`].
const EVENT_TIME: usize = 0;
const SERVER_UPLOAD_TIME: usize = 1;

/// The schema of `events`: the built-in columns, then the flattened properties (text).
pub fn schema(flattened: &[Flattened]) -> SchemaRef {
    let mut fields: Vec<Field> = COLUMNS
        .iter()
        .map(|(name, _, kind)| {
            let data_type = match kind {
                Kind::Time => DataType::Timestamp(TimeUnit::Microsecond, None),
                Kind::Text | Kind::Json => DataType::Utf8,
                Kind::Int => DataType::Int64,
                Kind::Float => DataType::Float64,
            };
            Field::new(*name, data_type, true)
        })
        .collect();
    fields.extend(
        flattened
            .iter()
            .map(|f| Field::new(&f.column, DataType::Utf8, true)),
    );
    Arc::new(Schema::new(fields))
}

/// A timestamp of the export, in microseconds since the epoch, UTC. Accepts
/// `2023-01-01 19:02:52.749000` (what exports write), the same without a fraction, with a `T`
/// (the S3 export's documentation), and with a `Z` or an offset.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    let naive = text.strip_suffix('Z').unwrap_or(text);
    let naive = naive.strip_suffix("+00:00").unwrap_or(naive);
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(naive, format) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_micros())
}

/// One parsed value.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Time(i64),
    Text(String),
    Int(i64),
    Float(f64),
}

/// A row of `events`, one cell per column of [`schema`].
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    cells: Vec<Cell>,
}

impl Row {
    /// The row's `event_time`, in microseconds.
    pub fn event_time(&self) -> Option<i64> {
        match self.cells[EVENT_TIME] {
            Cell::Time(t) => Some(t),
            _ => None,
        }
    }

    fn text(&self, name: &str) -> Option<&str> {
        let i = COLUMNS.iter().position(|(n, _, _)| *n == name)?;
        match &self.cells[i] {
            Cell::Text(t) => Some(t),
            _ => None,
        }
    }

    fn upload_time(&self) -> Option<i64> {
        match self.cells[SERVER_UPLOAD_TIME] {
            Cell::Time(t) => Some(t),
            _ => None,
        }
    }
}

/// Parses one line of an export. Errors say what is wrong with it.
pub fn parse_line(line: &str, flattened: &[Flattened]) -> Result<Row, String> {
    let value: Value =
        lodestar_connector_api::serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(event) = value else {
        return Err("not a JSON object".into());
    };
    let mut cells = Vec::with_capacity(COLUMNS.len() + flattened.len());
    for (_, key, kind) in COLUMNS {
        let value = match *key {
            "" => &Value::Null, // computed below
            key => event.get(key).unwrap_or(&Value::Null),
        };
        let cell = match (kind, value) {
            (_, Value::Null) => Cell::Null,
            (Kind::Time, Value::String(s)) if s.is_empty() => Cell::Null,
            (Kind::Time, Value::String(s)) => Cell::Time(
                parse_time(s).ok_or_else(|| format!("`{key}` `{s}` is not a timestamp"))?,
            ),
            (Kind::Text, Value::String(s)) => Cell::Text(s.clone()),
            (Kind::Text, Value::Number(n)) => Cell::Text(n.to_string()),
            (Kind::Text, Value::Bool(b)) => Cell::Text(b.to_string()),
            (Kind::Int, Value::Number(n)) => Cell::Int(
                n.as_i64()
                    .ok_or_else(|| format!("`{key}` {n} is not an integer"))?,
            ),
            (Kind::Int, Value::String(s)) if s.is_empty() => Cell::Null,
            (Kind::Int, Value::String(s)) => Cell::Int(
                s.trim()
                    .parse()
                    .map_err(|_| format!("`{key}` `{s}` is not an integer"))?,
            ),
            (Kind::Float, Value::Number(n)) => Cell::Float(n.as_f64().unwrap_or(f64::NAN)),
            (Kind::Float, Value::String(s)) if s.is_empty() => Cell::Null,
            (Kind::Float, Value::String(s)) => Cell::Float(
                s.trim()
                    .parse()
                    .map_err(|_| format!("`{key}` `{s}` is not a number"))?,
            ),
            (Kind::Json, Value::Object(map)) if map.is_empty() => Cell::Text("{}".into()),
            (Kind::Json, value) => Cell::Text(value.to_string()),
            (_, other) => return Err(format!("`{key}` has an unexpected value {other}")),
        };
        cells.push(cell);
    }
    // event_time, else client_event_time, else server_received_time.
    if cells[EVENT_TIME] == Cell::Null {
        let fallback = ["client_event_time", "server_received_time"]
            .iter()
            .filter_map(|name| COLUMNS.iter().position(|(n, _, _)| n == name))
            .map(|i| cells[i].clone())
            .find(|c| *c != Cell::Null);
        match fallback {
            Some(cell) => cells[EVENT_TIME] = cell,
            None => {
                return Err(
                    "no `event_time`, `client_event_time` or `server_received_time`".into(),
                );
            }
        }
    }
    // A session id of -1 means "no session".
    let session = position("session_id");
    if cells[session] == Cell::Int(-1) {
        cells[session] = Cell::Null;
    }
    // distinct_id: user_id, else device_id.
    let distinct = position("distinct_id");
    let user = &cells[position("user_id")];
    let device = &cells[position("device_id")];
    cells[distinct] = match (user, device) {
        (Cell::Text(u), _) if !u.is_empty() => user.clone(),
        (_, Cell::Text(d)) if !d.is_empty() => device.clone(),
        _ => Cell::Null,
    };
    for f in flattened {
        let value = event
            .get(f.scope.key())
            .and_then(Value::as_object)
            .and_then(|props| property(props, &f.key));
        cells.push(match value {
            None | Some(Value::Null) => Cell::Null,
            Some(Value::String(s)) => Cell::Text(s.clone()),
            Some(other) => Cell::Text(other.to_string()),
        });
    }
    Ok(Row { cells })
}

/// A property by its name; a dotted name that is not a key reads into nested objects.
fn property<'a>(props: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if let Some(v) = props.get(key) {
        return Some(v);
    }
    let (head, rest) = key.split_once('.')?;
    property(props.get(head)?.as_object()?, rest)
}

fn position(name: &str) -> usize {
    COLUMNS
        .iter()
        .position(|(n, _, _)| *n == name)
        .expect("a built-in column")
}

/// Seven days in microseconds: Amplitude drops an event whose `device_id` and `$insert_id` it
/// has seen in the last seven days.
const DEDUP_WINDOW: i64 = 7 * 86_400 * 1_000_000;

/// A malformed line: where, and what is wrong.
#[derive(Debug, Clone)]
pub struct BadLine {
    pub file: String,
    pub line: usize,
    pub problem: String,
}

/// Rows read from a scan's files, in order, with duplicates dropped.
#[derive(Debug, Default)]
pub struct Collector {
    rows: Vec<Row>,
    seen: HashMap<(String, String), i64>,
    pub duplicates: usize,
    pub bad: Vec<BadLine>,
}

impl Collector {
    /// Reads a gzipped JSON-lines file (`name` is for messages). With `BadLines::Fail`, a
    /// malformed line is an error naming the file and line.
    pub fn read_gz(
        &mut self,
        name: &str,
        gz: impl Read,
        flattened: &[Flattened],
        bad_lines: BadLines,
    ) -> Result<(), String> {
        let reader = BufReader::new(MultiGzDecoder::new(gz));
        for (i, line) in reader.lines().enumerate() {
            let line = line.map_err(|e| format!("cannot read `{name}` (line {}): {e}", i + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            match parse_line(&line, flattened) {
                Ok(row) => self.push(row),
                Err(problem) => {
                    let bad = BadLine {
                        file: name.to_string(),
                        line: i + 1,
                        problem,
                    };
                    if bad_lines == BadLines::Fail {
                        return Err(format!(
                            "malformed line in `{}` line {}: {}\nhint: fix or remove the line, or set `bad_lines: skip` to skip malformed lines (they are counted and reported)",
                            bad.file, bad.line, bad.problem
                        ));
                    }
                    self.bad.push(bad);
                }
            }
        }
        Ok(())
    }

    /// Adds a row unless it repeats `device_id` + `insert_id` of a row kept before, uploaded
    /// within seven days of it.
    pub fn push(&mut self, row: Row) {
        if let (Some(device), Some(insert)) = (row.text("device_id"), row.text("insert_id"))
            && !device.is_empty()
            && !insert.is_empty()
        {
            let upload = row.upload_time().or(row.event_time()).unwrap_or(0);
            let key = (device.to_string(), insert.to_string());
            // `abs_diff`: times span chrono's ±262,000 years, whose difference overflows an
            // i64 (a fuzzing regression case, fuzz/regressions/amplitude_line/).
            if let Some(first) = self.seen.get(&key)
                && upload.abs_diff(*first) <= DEDUP_WINDOW.unsigned_abs()
            {
                self.duplicates += 1;
                return;
            }
            self.seen.insert(key, upload);
        }
        self.rows.push(row);
    }

    #[cfg(test)]
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The rows as batches of `schema`.
    pub fn batches(&self, schema: &SchemaRef) -> Result<Vec<RecordBatch>, String> {
        self.rows
            .chunks(8192)
            .map(|rows| batch(rows, schema))
            .collect()
    }
}

fn batch(rows: &[Row], schema: &SchemaRef) -> Result<RecordBatch, String> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        let cells = rows.iter().map(|r| &r.cells[i]);
        let array: ArrayRef = match field.data_type() {
            DataType::Timestamp(_, _) => {
                let mut b = TimestampMicrosecondBuilder::with_capacity(rows.len());
                for c in cells {
                    b.append_option(match c {
                        Cell::Time(t) => Some(*t),
                        _ => None,
                    });
                }
                Arc::new(b.finish())
            }
            DataType::Int64 => {
                let mut b = Int64Builder::with_capacity(rows.len());
                for c in cells {
                    b.append_option(match c {
                        Cell::Int(v) => Some(*v),
                        _ => None,
                    });
                }
                Arc::new(b.finish())
            }
            DataType::Float64 => {
                let mut b = Float64Builder::with_capacity(rows.len());
                for c in cells {
                    b.append_option(match c {
                        Cell::Float(v) => Some(*v),
                        _ => None,
                    });
                }
                Arc::new(b.finish())
            }
            _ => {
                let mut b = StringBuilder::new();
                for c in cells {
                    b.append_option(match c {
                        Cell::Text(v) => Some(v.as_str()),
                        _ => None,
                    });
                }
                Arc::new(b.finish())
            }
        };
        columns.push(array);
    }
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout;
    use chrono::NaiveDate;

    fn micros(y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32, us: u32) -> i64 {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_micro_opt(h, mi, s, us)
            .unwrap()
            .and_utc()
            .timestamp_micros()
    }

    #[test]
    fn the_column_list_is_the_schema() {
        let names: Vec<&str> = COLUMNS.iter().map(|c| c.0).collect();
        assert_eq!(names, BUILTIN_COLUMNS);
    }

    #[test]
    fn the_three_timestamp_spellings() {
        let t = micros(2023, 1, 1, 19, 2, 52, 749_000);
        assert_eq!(parse_time("2023-01-01 19:02:52.749000"), Some(t));
        assert_eq!(parse_time("2023-01-01T19:02:52.749"), Some(t));
        assert_eq!(parse_time("2023-01-01T19:02:52.749Z"), Some(t));
        assert_eq!(parse_time("2023-01-01T21:02:52.749+02:00"), Some(t));
        assert_eq!(
            parse_time("2023-01-01 19:02:52"),
            Some(micros(2023, 1, 1, 19, 2, 52, 0))
        );
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(layout::of_micros(t) % 24, 19);
    }

    #[test]
    fn a_line_becomes_a_row() {
        let line = r#"{"event_type":"Open","user_id":null,"device_id":"d1","$insert_id":"i1",
            "client_event_time":"2023-01-01 10:00:00","session_id":-1,"amplitude_id":12,
            "server_upload_time":"2023-01-01 11:00:00.5","sample_rate":null,
            "event_properties":{"plan":"pro","n":3,"nested":{"a":1}},"user_properties":{}}"#
            .replace('\n', "");
        let flattened = [
            Flattened {
                column: "plan".into(),
                scope: Scope::Event,
                key: "plan".into(),
            },
            Flattened {
                column: "n".into(),
                scope: Scope::Event,
                key: "n".into(),
            },
            Flattened {
                column: "a".into(),
                scope: Scope::Event,
                key: "nested.a".into(),
            },
        ];
        let row = parse_line(&line, &flattened).unwrap();
        // No event_time: client_event_time.
        assert_eq!(row.event_time(), Some(micros(2023, 1, 1, 10, 0, 0, 0)));
        assert_eq!(row.cells[position("session_id")], Cell::Null);
        assert_eq!(row.text("distinct_id"), Some("d1"));
        assert_eq!(row.text("insert_id"), Some("i1"));
        assert_eq!(row.cells[position("amplitude_id")], Cell::Int(12));
        assert_eq!(row.text("user_properties"), Some("{}"));
        let n = COLUMNS.len();
        assert_eq!(row.cells[n], Cell::Text("pro".into()));
        assert_eq!(row.cells[n + 1], Cell::Text("3".into()));
        assert_eq!(row.cells[n + 2], Cell::Text("1".into()));

        assert!(
            parse_line("{not json", &[])
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(
            parse_line(r#"{"event_type":"x"}"#, &[])
                .unwrap_err()
                .contains("no `event_time`")
        );
        assert!(
            parse_line(r#"{"event_time":"soon"}"#, &[])
                .unwrap_err()
                .contains("`event_time` `soon`")
        );
    }

    #[test]
    fn duplicates_within_seven_days_are_dropped() {
        let line = |insert: &str, upload: &str| {
            format!(
                r#"{{"event_time":"2023-01-01 10:00:00","device_id":"d","$insert_id":"{insert}","server_upload_time":"{upload}"}}"#
            )
        };
        let mut c = Collector::default();
        for (insert, upload) in [
            ("a", "2023-01-01 10:00:00"),
            ("a", "2023-01-03 10:00:00"),
            ("b", "2023-01-01 10:00:00"),
            ("a", "2023-01-20 10:00:00"),
        ] {
            c.push(parse_line(&line(insert, upload), &[]).unwrap());
        }
        assert_eq!(c.rows().len(), 3);
        assert_eq!(c.duplicates, 1);
        // Without an insert id nothing is deduplicated.
        let no_id = r#"{"event_time":"2023-01-01 10:00:00","device_id":"d"}"#;
        c.push(parse_line(no_id, &[]).unwrap());
        c.push(parse_line(no_id, &[]).unwrap());
        assert_eq!(c.rows().len(), 5);
    }

    /// The `amplitude_line` fuzz target's regression case: the upload times of a repeated
    /// `device_id` + `$insert_id` at chrono's extreme years made `upload - first` overflow.
    #[test]
    fn repeats_half_a_million_years_apart_are_both_kept() {
        let line =
            |time: &str| format!(r#"{{"event_time":"{time}","device_id":"d","$insert_id":"i"}}"#);
        let mut c = Collector::default();
        c.push(parse_line(&line("-262000-01-01 00:00:00"), &[]).unwrap());
        c.push(parse_line(&line("+262000-01-01 00:00:00"), &[]).unwrap());
        assert_eq!((c.rows().len(), c.duplicates), (2, 0));
    }
}
