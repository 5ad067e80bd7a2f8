//! `amplitude_line`: the Amplitude connector's export-line parser and row collector
//! (`plugins/amplitude/src/rows.rs`) on arbitrary lines.

use lodestar_connector_amplitude::fuzzing::{
    Collector, Flattened, Scope, parse_line, parse_time, schema,
};

/// Each line of `data` is parsed as an export line, with three flattened properties (one a
/// dotted path); the rows kept go through deduplication and into Arrow batches. A parsed
/// row has an event time, the batches hold the rows kept, and a parsed timestamp prints and
/// parses back to itself.
pub fn amplitude_line(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let flattened = [
        flat("plan", Scope::Event, "plan"),
        flat("country", Scope::User, "geo.country"),
        flat("org", Scope::Group, "org"),
    ];
    let mut collector = Collector::default();
    let mut parsed = 0;
    for line in text.lines() {
        if let Some(t) = parse_time(line) {
            let printed = chrono::DateTime::from_timestamp_micros(t)
                .expect("a parsed time is in chrono's range")
                .naive_utc()
                .format("%Y-%m-%d %H:%M:%S%.6f")
                .to_string();
            assert_eq!(
                parse_time(&printed),
                Some(t),
                "`{line}` printed as `{printed}`"
            );
        }
        if let Ok(row) = parse_line(line, &flattened) {
            assert!(
                row.event_time().is_some(),
                "`{line}`: a row without event_time"
            );
            collector.push(row);
            parsed += 1;
        }
    }
    let batches = collector
        .batches(&schema(&flattened))
        .expect("parsed rows make batches");
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows + collector.duplicates, parsed, "rows lost or invented");
}

fn flat(column: &str, scope: Scope, key: &str) -> Flattened {
    Flattened {
        column: column.into(),
        scope,
        key: key.into(),
    }
}
