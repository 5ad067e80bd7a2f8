//! `lodestar discover`: which early activities go with users staying (candidate value moments).

use std::path::PathBuf;

use anyhow::Context;
use chrono::NaiveDate;
use clap::Args;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, ContentArrangement, Table};
use lodestar_core::Engine;
use lodestar_core::discovery::{
    Candidate, Discovery, DiscoveryRequest, MinSupport, Onboarding, Span, parse_table_column,
};
use lodestar_core::format::{fixed, percent, thousands};
use lodestar_core::model::TableRef;
use lodestar_core::request::{self, DateRange, Field, RequestError};

use crate::output::{self, Format};

pub const AFTER_HELP: &str = "\
Examples:
  lodestar discover --onboarded app.users.signed_up_at --within 1d --retained 14d --window 7d
  lodestar discover --onboarded signup --activity app.events.event_time --event-column event_type
  lodestar discover --onboarded signup --from 2026-03-01 --to 2026-05-31 --validate-on 2026-06-01..2026-06-30
  lodestar discover --onboarded app.users.signed_up_at --format csv --output candidates.csv

For each activity type and threshold k (did it at least k times within --within of onboarding),
users onboarded long enough ago are split into doers and the others, and compared on being
active again at --retained (within --window of it, or any time after). Ranked by the phi
correlation; candidates with fewer than --min-support users in either group are left out.
This finds correlation, not causation: test a candidate before making it a goal.
See docs/discovery.md for every number's definition.";

/// `lodestar discover`'s arguments.
#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// When a user is onboarded: a name of the project's `discovery.onboarding`, an event
    /// type (their first such event in the activity table), or a cohort table's time column
    /// SOURCE.TABLE.COLUMN (e.g. app.users.signed_up_at)
    #[arg(long, value_name = "NAME|EVENT|SOURCE.TABLE.COLUMN")]
    pub onboarded: String,
    /// Count activities done within this long of onboarding (12h, 1d, 2w)
    #[arg(long, default_value = "1d", value_parser = parse_span, value_name = "SPAN")]
    pub within: Span,
    /// Retained means active again this long after onboarding, or later
    #[arg(long, default_value = "14d", value_parser = parse_span, value_name = "SPAN")]
    pub retained: Span,
    /// …and before --retained plus this [default: any time after --retained]
    #[arg(long, value_parser = parse_span, value_name = "SPAN")]
    pub window: Option<Span>,
    /// The activity table and its time column [default: `discovery.activity` of the
    /// project, else the `events` table, its time column guessed]
    #[arg(long, value_name = "SOURCE.TABLE[.TIME]")]
    pub activity: Option<String>,
    /// The activity table's column holding the activity type [default:
    /// `discovery.event_column`, else event_type, event, event_name or type]
    #[arg(long, value_name = "COLUMN")]
    pub event_column: Option<String>,
    /// The column naming the user, in the activity table and the cohort table [default:
    /// `discovery.entity` of the project, else user_id]
    #[arg(long, value_name = "COLUMN")]
    pub entity: Option<String>,
    /// Only activity rows matching this SQL predicate count (e.g. "platform = 'ios'")
    #[arg(long = "where", value_name = "PREDICATE")]
    pub filter: Option<String>,
    /// Test thresholds "at least 1, 2, … K times"
    #[arg(long, default_value_t = lodestar_core::discovery::DEFAULT_MAX_K, value_name = "K")]
    pub max_k: u32,
    /// Users each group needs for a candidate to be ranked: a number, or a percentage of the
    /// judged users [default: 30 or 1%, whichever is larger]
    #[arg(long, value_parser = parse_min_support, value_name = "N|P%")]
    pub min_support: Option<MinSupport>,
    /// First onboarding date of the cohorts analysed (YYYY-MM-DD), inclusive
    #[arg(long, value_parser = request::parse_date)]
    pub from: Option<NaiveDate>,
    /// Last onboarding date of the cohorts analysed, inclusive [default with --validate-on:
    /// the day before the validation cohorts]
    #[arg(long, value_parser = request::parse_date)]
    pub to: Option<NaiveDate>,
    /// Check every candidate on other cohorts (onboarding dates FROM..TO, e.g.
    /// 2026-07-01..2026-07-31; an end may be left open) and mark those that do not hold
    #[arg(long, value_parser = parse_range, value_name = "FROM..TO")]
    pub validate_on: Option<DateRange>,
    /// Candidates described in the summary
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub top: usize,
    /// Write the ranking as a table (csv, json…) instead of the report for people
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Write to this file (atomically) instead of stdout
    #[arg(long, short, value_name = "FILE", requires = "format")]
    pub output: Option<PathBuf>,
}

fn parse_span(s: &str) -> Result<Span, String> {
    s.parse()
}

fn parse_min_support(s: &str) -> Result<MinSupport, String> {
    s.parse()
}

fn parse_range(s: &str) -> Result<DateRange, String> {
    s.parse()
}

impl DiscoverArgs {
    /// The core request these arguments ask for.
    pub fn request(&self, engine: &Engine) -> Result<DiscoveryRequest, lodestar_core::Error> {
        let mut request = DiscoveryRequest::new(Onboarding::of(engine.project(), &self.onboarded));
        if let Some(text) = &self.activity {
            let (table, time): (TableRef, Option<String>) = parse_table_column(text)
                .map_err(|message| RequestError::about(Field::Activity, message))?;
            request.activity = Some(table);
            request.activity_time = time;
        }
        request.event_column.clone_from(&self.event_column);
        request.entity.clone_from(&self.entity);
        request.filter.clone_from(&self.filter);
        request.within = self.within;
        request.retained = self.retained;
        request.window = self.window;
        request.max_k = self.max_k;
        request.min_support = self.min_support;
        request.cohorts = DateRange::of_fields(self.from, self.to)?;
        request.validate_on = self.validate_on;
        Ok(request)
    }
}

/// Prints the ranking and the summary, or writes the ranking table in `args.format`.
pub fn print(discovery: &Discovery, args: &DiscoverArgs) -> anyhow::Result<()> {
    match args.format {
        Some(format) => {
            let batch = discovery.to_record_batch()?;
            eprintln!(
                "note: these are correlations, not causes; the report without --format says more"
            );
            output::write(
                &batch.schema(),
                std::slice::from_ref(&batch),
                format,
                args.output.as_deref(),
            )
            .context("writing the ranking")
        }
        None => {
            print_report(discovery, args.top);
            Ok(())
        }
    }
}

fn print_report(d: &Discovery, top: usize) {
    if !d.candidates.is_empty() {
        println!("{}", ranking(d));
        let left_out = d.below_support.len();
        println!(
            "Ranked by phi. {} with fewer than {} users among doers or among the others {} left out.",
            plural(left_out, "candidate"),
            d.training.min_support,
            if left_out == 1 { "was" } else { "were" }
        );
        println!();
    }
    print!("{}", d.summary(top));
}

fn ranking(d: &Discovery) -> Table {
    let validated = d.validation.is_some();
    let mut header = vec![
        "#",
        "activity",
        "at least",
        "did it",
        "retained if did",
        "if not",
        "lift",
        "recall",
        "phi (95% CI)",
    ];
    if validated {
        header.extend(["validation phi", "holds?"]);
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    for (i, c) in d.candidates.iter().enumerate() {
        table.add_row(row(i + 1, c, validated));
    }
    for index in [0, 2, 3, 4, 5, 6, 7] {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

fn row(rank: usize, c: &Candidate, validated: bool) -> Vec<String> {
    let t = &c.table;
    let mut cells = vec![
        rank.to_string(),
        c.activity.clone(),
        c.at_least.to_string(),
        format!("{} ({})", thousands(t.doers()), percent(t.support())),
        percent(t.retention_did()),
        percent(t.retention_not()),
        fixed(t.lift(), 2),
        percent(t.recall()),
        match (t.phi(), c.phi_interval()) {
            (Some(phi), Some((low, high))) => {
                format!(
                    "{} [{}, {}]",
                    fixed(Some(phi), 3),
                    fixed(Some(low), 3),
                    fixed(Some(high), 3)
                )
            }
            (phi, _) => fixed(phi, 3),
        },
    ];
    if validated {
        let v = c.validation.as_ref();
        cells.push(fixed(v.and_then(|v| v.table.phi()), 3));
        cells.push(v.map(|v| v.verdict.as_str()).unwrap_or("–").to_string());
    }
    cells
}

fn plural(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}
