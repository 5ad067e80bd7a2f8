//! The North Star report, rendered once for every front-end: `lodestar report` writes it to a
//! file, `lodestar serve` answers it at `GET /api/v1/report`, and the dashboard asks the server
//! for the same rules' results (`overview`) instead of restating them.
//!
//! - [`rules`]: the product rules (the last complete period, retention's fallback and grain,
//!   discovery's onboarding), as pure functions.
//! - [`svg`]: the hand-written SVG charts (a line chart, a heat map) and their axis ticks.
//! - `html`: the self-contained page ([`render`]): inline CSS and SVG, no script, exact
//!   numbers in `data-*` attributes.
//! - [`overview`]: what the dashboard shows, computed with the same rules, numbers formatted.
//!
//! Numbers become text through `lodestar_core::format` only. Every number comes from the
//! core; this crate lays them out. What a front-end says about itself (how to ask for a
//! section that is left out, how its errors name fields) comes through a [`Voice`].

mod html;
pub mod overview;
pub mod rules;
pub mod svg;

use chrono::NaiveDate;
use lodestar_core::Compare;
use lodestar_core::discovery::Span;
use lodestar_core::model::Grain;
use lodestar_core::request::{EventColumn, Spelling};

pub use html::render;

/// The report crate's errors: the core's, from the computations behind a section.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] lodestar_core::Error),
}

impl Error {
    /// The core's error, for a front-end that words it with its own spelling.
    pub fn into_core(self) -> lodestar_core::Error {
        match self {
            Error::Core(e) => e,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Candidates shown in the ranking, by default.
pub const DEFAULT_TOP: usize = 10;
/// Periods 0..=N of the heat map, by default.
pub const DEFAULT_RETENTION_PERIODS: u32 = 12;
/// The entity column of named retention tables and of discovery, by default.
pub const DEFAULT_ENTITY: &str = "user_id";

/// What a report shows. [`Options::default`] is `lodestar report` without options.
#[derive(Debug, Clone)]
pub struct Options {
    /// The metric reported on; `None`: the north stars.
    pub metric: Option<String>,
    /// The chart's and the tree's grain; `None`: the period's, the metric's, else a week.
    pub grain: Option<Grain>,
    /// The tree's period (with the grain its text implies); `None`: the last complete one.
    pub period: Option<(Option<Grain>, NaiveDate)>,
    pub compare: Compare,
    /// Retention's cohort and activity columns; `None`: the project's retention metric's.
    pub retention: Option<(EventColumn, EventColumn)>,
    /// The entity column of named retention tables and of discovery onboarded at `onboarded`.
    pub entity: String,
    /// Cohort length; `None`: [`rules::retention_grain`].
    pub retention_grain: Option<Grain>,
    pub retention_periods: u32,
    /// When users are onboarded: an event type or `source.table.column`; `None`: the
    /// retention cohort's event.
    pub onboarded: Option<String>,
    pub within: Span,
    pub retained: Span,
    pub window: Option<Span>,
    /// Candidates shown in the ranking.
    pub top: usize,
    /// Whether discovery's error hints may list values of the data.
    pub reveal_values: bool,
    /// The least support of a discovery candidate, in users (the server's floor); 0: none.
    pub support_floor: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            metric: None,
            grain: None,
            period: None,
            compare: Compare::Previous,
            retention: None,
            entity: DEFAULT_ENTITY.into(),
            retention_grain: None,
            retention_periods: DEFAULT_RETENTION_PERIODS,
            onboarded: None,
            within: Span::days(1),
            retained: Span::days(14),
            window: None,
            top: DEFAULT_TOP,
            reveal_values: true,
            support_floor: 0,
        }
    }
}

/// What a front-end says in the page about itself: the CLI names options and commands, the
/// server parameters.
pub trait Voice: Sync {
    /// How the front-end names a request's fields and actions, for errors shown in the page.
    fn spelling(&self) -> &dyn Spelling;
    /// The note in place of retention when there is none: how to ask for it.
    fn no_retention(&self) -> String;
    /// The note in place of discovery when no onboarding is known: how to give one.
    fn no_onboarding(&self) -> String;
    /// The note in place of discovery when onboarding at the retention cohort failed.
    fn discovery_failed(&self, error: &str) -> String;
    /// What made the page, for its footer (`lodestar report`).
    fn made_with(&self) -> &str;
}
