//! The request vocabulary both front-ends share: the fields a request names ([`Field`]), errors
//! about a request worded without any front-end's words ([`RequestError`]) and spelled by each
//! front-end its own way ([`Spelling`]: `--from` on the command line, parameter `from` on the
//! HTTP API), and the parsers of the values both take as text: dates and date ranges
//! ([`parse_date`], [`DateRange`]), event columns `source.table.column` ([`EventColumn`]) and
//! retention brackets `1-1,2-7` ([`Brackets`]).

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;

use crate::project::model::TableRef;

/// Where an event is: a table, its time column, the entity column, and an optional filter.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSpec {
    pub table: TableRef,
    pub time: String,
    pub entity: String,
    pub filter: Option<String>,
}

/// A field of a request. [`Field::name`] is its parameter on the HTTP API; the CLI writes it as
/// an option (`--from`, `--where` for [`Field::Filter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// The metrics asked for.
    Metrics,
    Grain,
    From,
    To,
    /// Breakdown dimensions.
    By,
    /// A filter on dimensions: SQL on the command line (`--where`), `dimension:value` pairs on
    /// the HTTP API.
    Filter,
    Period,
    Compare,
    /// Retention's cohort events.
    Cohort,
    /// Retention's or discovery's activity table.
    Activity,
    Entity,
    ActivityEntity,
    /// Retention's periods `0..=N`.
    Periods,
    Mode,
    Brackets,
    /// Discovery's onboarding.
    Onboarded,
    Within,
    Retained,
    Window,
    EventColumn,
    MaxK,
    MinSupport,
    ValidateOn,
}

impl Field {
    /// The field's name, as the HTTP API names its parameter: `from`, `event_column`.
    pub const fn name(self) -> &'static str {
        match self {
            Field::Metrics => "metrics",
            Field::Grain => "grain",
            Field::From => "from",
            Field::To => "to",
            Field::By => "by",
            Field::Filter => "filter",
            Field::Period => "period",
            Field::Compare => "compare",
            Field::Cohort => "cohort",
            Field::Activity => "activity",
            Field::Entity => "entity",
            Field::ActivityEntity => "activity_entity",
            Field::Periods => "periods",
            Field::Mode => "mode",
            Field::Brackets => "brackets",
            Field::Onboarded => "onboarded",
            Field::Within => "within",
            Field::Retained => "retained",
            Field::Window => "window",
            Field::EventColumn => "event_column",
            Field::MaxK => "max_k",
            Field::MinSupport => "min_support",
            Field::ValidateOn => "validate_on",
        }
    }

    /// This field with the value a request gave it: `--from 2026-03-10`, parameter `from`
    /// (2026-03-10).
    pub fn given(self, value: impl fmt::Display) -> Piece {
        Piece::Given(self, value.to_string())
    }

    /// This field with a value to give it, in a fix: `--grain week`, `grain=week`.
    pub fn set_to(self, value: impl fmt::Display) -> Piece {
        Piece::Set(self, value.to_string())
    }
}

/// Something a user can do besides changing the request, which each front-end offers its own
/// way, or not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// See the project's metrics.
    ListMetrics,
    /// See the sources' tables.
    ListTables,
    /// Compute without the result cache, or clear it.
    BypassCache,
    /// Name the project file, or look for it from another directory.
    ChooseProject,
}

/// A part of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Field(Field),
    /// A field with the value the request gave it ([`Field::given`]).
    Given(Field, String),
    /// A field with a value to give it ([`Field::set_to`]).
    Set(Field, String),
    Action(Action),
}

impl From<&str> for Piece {
    fn from(text: &str) -> Piece {
        Piece::Text(text.to_string())
    }
}

impl From<String> for Piece {
    fn from(text: String) -> Piece {
        Piece::Text(text)
    }
}

impl From<Field> for Piece {
    fn from(field: Field) -> Piece {
        Piece::Field(field)
    }
}

impl From<Action> for Piece {
    fn from(action: Action) -> Piece {
        Piece::Action(action)
    }
}

/// How a front-end writes fields and actions.
pub trait Spelling {
    /// A field: `--from`, parameter `from`.
    fn field(&self, field: Field) -> String;

    /// A field with the value the request gave it.
    fn given(&self, field: Field, value: &str) -> String {
        format!("{} {value}", self.field(field))
    }

    /// A field with a value to give it.
    fn set_to(&self, field: Field, value: &str) -> String {
        format!("{} {value}", self.field(field))
    }

    /// An action, or `None` when this front-end does not offer it; a hint that needs it is
    /// then left out.
    fn action(&self, action: Action) -> Option<String>;
}

/// The core's own spelling, for logs and [`fmt::Display`]: fields by their names in backticks,
/// no actions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

impl Spelling for Plain {
    fn field(&self, field: Field) -> String {
        format!("`{}`", field.name())
    }

    fn given(&self, field: Field, value: &str) -> String {
        format!("`{}` ({value})", field.name())
    }

    fn set_to(&self, field: Field, value: &str) -> String {
        format!("`{}` {value}", field.name())
    }

    fn action(&self, _: Action) -> Option<String> {
        None
    }
}

/// A message made of text, fields and actions, spelled by a front-end.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Wording(Vec<Piece>);

impl Wording {
    pub fn new(pieces: Vec<Piece>) -> Wording {
        Wording(pieces)
    }

    pub fn pieces(&self) -> &[Piece] {
        &self.0
    }

    /// The message in `spelling`'s words; `None` when it needs an action `spelling` does not
    /// offer.
    pub fn spell(&self, spelling: &dyn Spelling) -> Option<String> {
        let mut text = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => text.push_str(t),
                Piece::Field(field) => text.push_str(&spelling.field(*field)),
                Piece::Given(field, value) => text.push_str(&spelling.given(*field, value)),
                Piece::Set(field, value) => text.push_str(&spelling.set_to(*field, value)),
                Piece::Action(action) => text.push_str(&spelling.action(*action)?),
            }
        }
        Some(text)
    }

    /// The fields it names, in order.
    pub fn fields(&self) -> impl Iterator<Item = Field> + '_ {
        self.0.iter().filter_map(|piece| match piece {
            Piece::Field(f) | Piece::Given(f, _) | Piece::Set(f, _) => Some(*f),
            Piece::Text(_) | Piece::Action(_) => None,
        })
    }
}

impl From<&str> for Wording {
    fn from(text: &str) -> Wording {
        Wording(vec![text.into()])
    }
}

impl From<String> for Wording {
    fn from(text: String) -> Wording {
        Wording(vec![text.into()])
    }
}

impl From<Action> for Wording {
    fn from(action: Action) -> Wording {
        Wording(vec![action.into()])
    }
}

/// A [`Wording`] of pieces of any kind: `words![Field::By, format!(" uses `{dim}`")]`.
macro_rules! words {
    ($($piece:expr),+ $(,)?) => {
        $crate::query::request::Wording::new(vec![$($crate::query::request::Piece::from($piece)),+])
    };
}
pub(crate) use words;

/// A request asks for something that does not exist or fit: what is wrong, naming the
/// request's fields, and what would likely fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub problem: Wording,
    pub fix: Option<Wording>,
}

impl RequestError {
    pub fn new(problem: impl Into<Wording>) -> RequestError {
        RequestError {
            problem: problem.into(),
            fix: None,
        }
    }

    /// A value of `field` is wrong: `{field}: {problem}`, as a parser of the value says it.
    pub fn about(field: Field, problem: impl Into<String>) -> RequestError {
        RequestError::new(words![field, ": ", problem.into()])
    }

    pub fn with_fix(mut self, fix: impl Into<Wording>) -> RequestError {
        self.fix = Some(fix.into());
        self
    }

    /// What is wrong, in `spelling`'s words (in [`Plain`] words if it needs an action
    /// `spelling` does not offer).
    pub fn message(&self, spelling: &dyn Spelling) -> String {
        self.problem
            .spell(spelling)
            .or_else(|| self.problem.spell(&Plain))
            .unwrap_or_default()
    }

    /// What would fix it, in `spelling`'s words; `None` without a fix `spelling` can say.
    pub fn hint(&self, spelling: &dyn Spelling) -> Option<String> {
        self.fix.as_ref().and_then(|fix| fix.spell(spelling))
    }

    /// The message and its `hint:` line, as a front-end prints them.
    pub fn spelled(&self, spelling: &dyn Spelling) -> String {
        let hint = self.hint(spelling);
        format!(
            "{}{}",
            self.message(spelling),
            crate::project::error::hint_suffix(&hint)
        )
    }

    /// The request's fields it names.
    pub fn fields(&self) -> Vec<Field> {
        let mut fields: Vec<Field> = Vec::new();
        for field in self.problem.fields() {
            if !fields.contains(&field) {
                fields.push(field);
            }
        }
        fields
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spelled(&Plain))
    }
}

impl std::error::Error for RequestError {}

/// A `YYYY-MM-DD` date.
pub fn parse_date(text: &str) -> Result<NaiveDate, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a date: write YYYY-MM-DD"))
}

/// Dates, inclusive at both ends, in the project's timezone; an open end is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DateRange {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

impl DateRange {
    /// The range of a request's `from` and `to` fields, refused when it ends before it
    /// starts.
    pub fn of_fields(
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
    ) -> Result<DateRange, RequestError> {
        if let (Some(from), Some(to)) = (from, to)
            && from > to
        {
            return Err(RequestError::new(words![
                Field::From.given(from),
                " is after ",
                Field::To.given(to),
            ]));
        }
        Ok(DateRange { from, to })
    }
}

impl fmt::Display for DateRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |d: Option<NaiveDate>| d.map(|d| d.to_string()).unwrap_or_default();
        write!(f, "{}..{}", show(self.from), show(self.to))
    }
}

impl FromStr for DateRange {
    type Err = String;

    /// `2026-06-01..2026-06-30`; either end may be left open (`2026-07-01..`).
    fn from_str(s: &str) -> Result<DateRange, String> {
        let (from, to) = s.split_once("..").ok_or_else(|| {
            format!("`{s}` is not a date range: write FROM..TO, e.g. 2026-06-01..2026-06-30")
        })?;
        let date = |t: &str| -> Result<Option<NaiveDate>, String> {
            let t = t.trim();
            if t.is_empty() {
                return Ok(None);
            }
            parse_date(t).map(Some)
        };
        let range = DateRange {
            from: date(from)?,
            to: date(to)?,
        };
        if let (Some(from), Some(to)) = (range.from, range.to)
            && from > to
        {
            return Err(format!("`{s}` ends before it starts"));
        }
        Ok(range)
    }
}

/// A table's time column, `source.table.column`: where retention's cohort or activity events
/// are. Every part is needed; the column is the rest after the second dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventColumn {
    pub table: TableRef,
    pub time: String,
}

impl EventColumn {
    /// The events of each `entity` at this column's times, among the rows `filter` keeps.
    pub fn events(self, entity: String, filter: Option<String>) -> EventSpec {
        EventSpec {
            table: self.table,
            time: self.time,
            entity,
            filter,
        }
    }
}

impl FromStr for EventColumn {
    type Err = String;

    fn from_str(text: &str) -> Result<EventColumn, String> {
        let mut parts = text.splitn(3, '.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(source), Some(table), Some(column))
                if !source.is_empty() && !table.is_empty() && !column.is_empty() =>
            {
                Ok(EventColumn {
                    table: TableRef {
                        source: source.to_string(),
                        table: table.to_string(),
                    },
                    time: column.to_string(),
                })
            }
            _ => Err(format!(
                "`{text}` does not name a time column: write source.table.column, e.g. app.users.signed_up_at"
            )),
        }
    }
}

/// Retention's brackets of periods, `1-1,2-7,8-30`: inclusive ranges, a single number for a
/// bracket of one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brackets(pub Vec<(u32, u32)>);

impl FromStr for Brackets {
    type Err = String;

    fn from_str(text: &str) -> Result<Brackets, String> {
        text.split(',')
            .map(|part| {
                let (a, b) = part.split_once('-').unwrap_or((part, part));
                match (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
                    (Ok(a), Ok(b)) if a <= b => Ok((a, b)),
                    _ => Err(format!(
                        "bracket `{part}` is not a range of periods like 2-7"
                    )),
                }
            })
            .collect::<Result<_, _>>()
            .map(Brackets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fields as options, as a command line would.
    struct Options;

    impl Spelling for Options {
        fn field(&self, field: Field) -> String {
            format!("--{}", field.name().replace('_', "-"))
        }

        fn action(&self, action: Action) -> Option<String> {
            (action == Action::ListMetrics).then(|| "`list`".to_string())
        }
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn one_error_is_spelled_by_each_front_end() {
        let error = RequestError::new(words![Field::By, " uses `x`"])
            .with_fix(words!["see ", Action::ListMetrics]);
        assert_eq!(error.spelled(&Options), "--by uses `x`\n  hint: see `list`");
        // Without the action, no hint; the message stays.
        assert_eq!(error.spelled(&Plain), "`by` uses `x`");
        assert_eq!(error.to_string(), "`by` uses `x`");
        assert_eq!(error.fields(), [Field::By]);
        let about = RequestError::about(Field::Period, "`2026-W60` is not a period");
        assert_eq!(
            about.message(&Options),
            "--period: `2026-W60` is not a period"
        );
        let set = Wording::new(vec![Field::MaxK.set_to(5)]);
        assert_eq!(set.spell(&Options).unwrap(), "--max-k 5");
    }

    #[test]
    fn a_range_ending_before_it_starts_names_both_fields() {
        let error = DateRange::of_fields(Some(d("2026-03-10")), Some(d("2026-03-01"))).unwrap_err();
        assert_eq!(
            error.message(&Options),
            "--from 2026-03-10 is after --to 2026-03-01"
        );
        assert_eq!(
            error.message(&Plain),
            "`from` (2026-03-10) is after `to` (2026-03-01)"
        );
        assert_eq!(error.fields(), [Field::From, Field::To]);
        let same = DateRange::of_fields(Some(d("2026-03-01")), Some(d("2026-03-01"))).unwrap();
        assert_eq!(same.to_string(), "2026-03-01..2026-03-01");
        assert!(DateRange::of_fields(None, Some(d("1999-01-01"))).is_ok());
    }

    #[test]
    fn dates_and_date_ranges_parse() {
        assert_eq!(parse_date("2026-02-28"), Ok(d("2026-02-28")));
        assert_eq!(
            parse_date("2026-02-30"),
            Err("`2026-02-30` is not a date: write YYYY-MM-DD".into())
        );
        let range: DateRange = "2026-06-01..".parse().unwrap();
        assert_eq!((range.from, range.to), (Some(d("2026-06-01")), None));
        let range: DateRange = "..2026-06-30".parse().unwrap();
        assert_eq!((range.from, range.to), (None, Some(d("2026-06-30"))));
        assert!(
            "2026-06-01"
                .parse::<DateRange>()
                .unwrap_err()
                .contains("write FROM..TO")
        );
        assert_eq!(
            "2026-07-01..2026-06-01".parse::<DateRange>(),
            Err("`2026-07-01..2026-06-01` ends before it starts".into())
        );
        assert!(
            "2026-06-01..June"
                .parse::<DateRange>()
                .unwrap_err()
                .contains("`June` is not a date")
        );
    }

    #[test]
    fn event_columns_need_every_part() {
        let column: EventColumn = "app.users.signed_up_at".parse().unwrap();
        assert_eq!(column.table.to_string(), "app.users");
        assert_eq!(column.time, "signed_up_at");
        // The column is the rest: a dotted column name stays whole.
        let column: EventColumn = "app.users.a.b".parse().unwrap();
        assert_eq!(column.time, "a.b");
        let spec = column.events("user_id".into(), None);
        assert_eq!(
            (spec.time.as_str(), spec.entity.as_str()),
            ("a.b", "user_id")
        );
        for bad in [
            "app.users",
            "app",
            "",
            ".users.signed_up_at",
            "app..t",
            "app.users.",
        ] {
            let error = bad.parse::<EventColumn>().unwrap_err();
            assert_eq!(
                error,
                format!(
                    "`{bad}` does not name a time column: write source.table.column, e.g. app.users.signed_up_at"
                )
            );
        }
    }

    #[test]
    fn brackets_are_ranges_or_single_periods() {
        assert_eq!(
            "1-1,2-7, 8 - 30,31".parse::<Brackets>(),
            Ok(Brackets(vec![(1, 1), (2, 7), (8, 30), (31, 31)]))
        );
        for (bad, part) in [("7-2", "7-2"), ("1-1,x", "x"), ("", ""), ("1-", "1-")] {
            assert_eq!(
                bad.parse::<Brackets>(),
                Err(format!(
                    "bracket `{part}` is not a range of periods like 2-7"
                ))
            );
        }
    }
}
