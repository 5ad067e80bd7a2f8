//! `lodestar report`: its options, and the page `lodestar_report::render` lays out written to
//! a file. The rules, the charts and the HTML are the report crate's, shared with the server.

use std::io::Write as _;
use std::path::PathBuf;

use clap::Args;
use lodestar_core::Engine;
use lodestar_core::discovery::Span;
use lodestar_core::model::Grain;
use lodestar_core::request::{EventColumn, Spelling};
use lodestar_report::{Options, Voice};

use crate::output;
use crate::spelling::Flags;

pub const AFTER_HELP: &str = "\
Examples:
  lodestar report
  lodestar report nights_booked --grain month --output nights.html
  lodestar report --cohort app.users.signed_up_at --activity app.events.event_time --entity user_id
  lodestar report --onboarded app.users.signed_up_at --within 1d --retained 14d --window 7d

The retention section needs a cohort and an activity: --cohort and --activity, else the
project's first retention metric's. Discovery onboards users at --onboarded, else at the
retention cohort's event. A section left out says in the report how to include it.";

/// `lodestar report`'s arguments.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The metric reported on [default: the north stars]
    pub metric: Option<String>,
    /// The HTML file to write (atomically)
    #[arg(long, short, value_name = "FILE", default_value = "report.html")]
    pub output: PathBuf,
    /// Period length of the chart and the tree [default: the --period's, the metric's grain, else week]
    #[arg(long, value_parser = crate::parse_grain)]
    pub grain: Option<Grain>,
    /// The tree's period: 2026-W20, 2026-05, 2026-Q2, 2026 or a date [default: the last complete one]
    #[arg(long)]
    pub period: Option<String>,
    /// The tree compares with: previous, yoy, or a period like --period
    #[arg(long, default_value = "previous")]
    pub compare: String,

    /// Retention cohort event: SOURCE.TABLE.COLUMN [default: the project's retention metric's]
    #[arg(
        long,
        value_name = "SOURCE.TABLE.COLUMN",
        requires = "activity",
        help_heading = "Retention"
    )]
    pub cohort: Option<EventColumn>,
    /// Retention activity: SOURCE.TABLE.COLUMN
    #[arg(
        long,
        value_name = "SOURCE.TABLE.COLUMN",
        requires = "cohort",
        help_heading = "Retention"
    )]
    pub activity: Option<EventColumn>,
    /// The entity column, for retention and discovery
    #[arg(long, default_value = lodestar_report::DEFAULT_ENTITY, help_heading = "Retention")]
    pub entity: String,
    /// Cohort length: day, week or month [default: the report's grain if one of these, else week]
    #[arg(long, value_parser = crate::parse_grain, help_heading = "Retention")]
    pub retention_grain: Option<Grain>,
    /// Periods 0..=N shown in the heat map
    #[arg(
        long,
        default_value_t = lodestar_report::DEFAULT_RETENTION_PERIODS,
        value_name = "N",
        help_heading = "Retention"
    )]
    pub retention_periods: u32,

    /// When a user is onboarded: an event type or SOURCE.TABLE.COLUMN [default: the retention cohort]
    #[arg(
        long,
        value_name = "EVENT|SOURCE.TABLE.COLUMN",
        help_heading = "Discovery"
    )]
    pub onboarded: Option<String>,
    /// Count activities done within this long of onboarding
    #[arg(long, default_value = "1d", value_parser = parse_span, value_name = "SPAN", help_heading = "Discovery")]
    pub within: Span,
    /// Retained means active again this long after onboarding, or later
    #[arg(long, default_value = "14d", value_parser = parse_span, value_name = "SPAN", help_heading = "Discovery")]
    pub retained: Span,
    /// …and before --retained plus this [default: any time after]
    #[arg(long, value_parser = parse_span, value_name = "SPAN", help_heading = "Discovery")]
    pub window: Option<Span>,
    /// Candidates shown in the ranking
    #[arg(
        long,
        default_value_t = lodestar_report::DEFAULT_TOP,
        value_name = "N",
        help_heading = "Discovery"
    )]
    pub top: usize,
}

fn parse_span(s: &str) -> Result<Span, String> {
    s.parse()
}

/// The CLI's words in the page: options and commands.
#[derive(Debug)]
struct Cli;

impl Voice for Cli {
    fn spelling(&self) -> &dyn Spelling {
        &Flags
    }

    fn no_retention(&self) -> String {
        "No retention here: the project has no retention metric. Add one, or run lodestar \
         report --cohort SOURCE.TABLE.COLUMN --activity SOURCE.TABLE.COLUMN --entity COLUMN \
         (e.g. --cohort app.users.signed_up_at --activity app.events.event_time --entity \
         user_id)."
            .into()
    }

    fn no_onboarding(&self) -> String {
        "No discovery here: it needs to know when users are onboarded. Run lodestar report \
         --onboarded SOURCE.TABLE.COLUMN (e.g. app.users.signed_up_at), or an event type of \
         the activity table."
            .into()
    }

    fn discovery_failed(&self, error: &str) -> String {
        format!(
            "No discovery here: with the retention cohort as onboarding, it failed: {error}. \
             Pass --onboarded (and check `lodestar discover --help`) to include it."
        )
    }

    fn made_with(&self) -> &str {
        "lodestar report"
    }
}

impl ReportArgs {
    /// The report these arguments ask for.
    fn options(&self) -> Result<Options, lodestar_core::Error> {
        let (period_grain, period, compare) =
            crate::period_and_compare(self.period.as_deref(), &self.compare)?;
        Ok(Options {
            metric: self.metric.clone(),
            grain: self.grain,
            period: period.map(|date| (period_grain, date)),
            compare,
            retention: self.cohort.clone().zip(self.activity.clone()),
            entity: self.entity.clone(),
            retention_grain: self.retention_grain,
            retention_periods: self.retention_periods,
            onboarded: self.onboarded.clone(),
            within: self.within,
            retained: self.retained,
            window: self.window,
            top: self.top,
            ..Options::default()
        })
    }
}

/// Computes every section, then writes the file; nothing is written if a computation fails.
pub async fn run(engine: &Engine, args: &ReportArgs) -> anyhow::Result<()> {
    let html = lodestar_report::render(engine, &args.options()?, &Cli)
        .await
        .map_err(lodestar_report::Error::into_core)?;
    output::write_atomically(&args.output, |file| {
        file.write_all(html.as_bytes())?;
        Ok(())
    })
}
