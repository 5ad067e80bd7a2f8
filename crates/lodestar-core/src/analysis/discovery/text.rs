//! Presenting a discovery: the ranking as a `RecordBatch` and the plain-language summary
//! with its caveats.

use std::sync::Arc;

use chrono::{Days, NaiveDateTime};
use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, UInt32Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use super::{Candidate, Cohort, Discovery, Verdict, Z_95};
use crate::format::{percent, thousands};
use crate::project::error::Result;

impl Discovery {
    /// Every tested candidate, ranked ones first.
    pub fn all_candidates(&self) -> impl Iterator<Item = &Candidate> {
        self.candidates.iter().chain(&self.below_support)
    }

    /// The ranked candidates as a table, one row per candidate, best first: `rank`,
    /// `activity`, `at_least`, `users`, `doers`, `support`, the four cells of the 2×2 table,
    /// `retention_did`, `retention_not`, `lift`, `precision`, `recall`, `phi`, `phi_low`,
    /// `phi_high`, then the same on the validation cohort (null without one) and `validation`
    /// (holds, weaker, fails, too few users).
    pub fn to_record_batch(&self) -> Result<RecordBatch> {
        let rows = &self.candidates;
        let floats = |f: &dyn Fn(&Candidate) -> Option<f64>| -> ArrayRef {
            Arc::new(rows.iter().map(f).collect::<Float64Array>())
        };
        let ints = |f: &dyn Fn(&Candidate) -> Option<u64>| -> ArrayRef {
            Arc::new(
                rows.iter()
                    .map(|c| f(c).map(|v| i64::try_from(v).unwrap_or(i64::MAX)))
                    .collect::<Int64Array>(),
            )
        };
        let valid = |c: &Candidate| c.validation.map(|v| v.table);
        let mut fields = vec![
            Field::new("rank", DataType::UInt32, false),
            Field::new("activity", DataType::Utf8, false),
            Field::new("at_least", DataType::UInt32, false),
        ];
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from_iter_values(
                (1..=rows.len()).map(|r| u32::try_from(r).unwrap_or(u32::MAX)),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|c| c.activity.as_str()),
            )),
            Arc::new(UInt32Array::from_iter_values(
                rows.iter().map(|c| c.at_least),
            )),
        ];
        let int_columns: [IntColumn<'_>; 6] = [
            ("users", &|c| Some(c.table.users())),
            ("doers", &|c| Some(c.table.doers())),
            ("doers_retained", &|c| Some(c.table.doers_retained)),
            ("doers_churned", &|c| Some(c.table.doers_churned)),
            ("others_retained", &|c| Some(c.table.others_retained)),
            ("others_churned", &|c| Some(c.table.others_churned)),
        ];
        for (name, f) in int_columns {
            fields.push(Field::new(name, DataType::Int64, false));
            columns.push(ints(f));
        }
        let float_columns: [FloatColumn<'_>; 9] = [
            ("support", &|c| c.table.support()),
            ("retention_did", &|c| c.table.retention_did()),
            ("retention_not", &|c| c.table.retention_not()),
            ("lift", &|c| c.table.lift()),
            ("precision", &|c| c.table.precision()),
            ("recall", &|c| c.table.recall()),
            ("phi", &|c| c.table.phi()),
            ("phi_low", &|c| c.phi_interval().map(|i| i.0)),
            ("phi_high", &|c| c.phi_interval().map(|i| i.1)),
        ];
        for (name, f) in float_columns {
            fields.push(Field::new(name, DataType::Float64, true));
            columns.push(floats(f));
        }
        let validation_ints: [IntColumn<'_>; 2] = [
            ("validation_users", &|c| valid(c).map(|t| t.users())),
            ("validation_doers", &|c| valid(c).map(|t| t.doers())),
        ];
        for (name, f) in validation_ints {
            fields.push(Field::new(name, DataType::Int64, true));
            columns.push(ints(f));
        }
        let validation_floats: [FloatColumn<'_>; 6] = [
            ("validation_retention_did", &|c| valid(c)?.retention_did()),
            ("validation_retention_not", &|c| valid(c)?.retention_not()),
            ("validation_lift", &|c| valid(c)?.lift()),
            ("validation_phi", &|c| valid(c)?.phi()),
            ("validation_phi_low", &|c| {
                Some(valid(c)?.phi_interval(Z_95)?.0)
            }),
            ("validation_phi_high", &|c| {
                Some(valid(c)?.phi_interval(Z_95)?.1)
            }),
        ];
        for (name, f) in validation_floats {
            fields.push(Field::new(name, DataType::Float64, true));
            columns.push(floats(f));
        }
        fields.push(Field::new("validation", DataType::Utf8, true));
        columns.push(Arc::new(
            rows.iter()
                .map(|c| c.validation.map(|v| v.verdict.as_str()))
                .collect::<StringArray>(),
        ));
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }

    /// A plain-language account of the `top` best candidates, with the caveats.
    pub fn summary(&self, top: usize) -> String {
        summary(self, top)
    }
}

/// A named column of the ranking and how each candidate fills it.
type IntColumn<'a> = (&'a str, &'a dyn Fn(&Candidate) -> Option<u64>);
type FloatColumn<'a> = (&'a str, &'a dyn Fn(&Candidate) -> Option<f64>);

/// "users onboarded from 2026-03-01 up to 2026-08-10 23:59": the judged span of a cohort.
fn onboarded_span(cohort: &Cohort, latest: NaiveDateTime) -> String {
    let from = cohort
        .range
        .from
        .map(|d| format!(" from {d}"))
        .unwrap_or_default();
    let to = match cohort.range.to {
        Some(to) if NaiveDateTime::from(to + Days::new(1)) <= latest => format!(" to {to}"),
        _ => format!(" up to {}", latest.format("%Y-%m-%d %H:%M")),
    };
    format!("onboarded{from}{to}")
}

/// One sentence per cohort: how many were judged, how many retained, how many too young.
fn cohort_text(name: &str, cohort: &Cohort, latest: NaiveDateTime) -> String {
    let mut out = if cohort.users == 0 {
        format!(
            "{name}: no user {} is old enough to be judged.",
            onboarded_span(cohort, latest)
        )
    } else {
        format!(
            "{name}: {} users {} are old enough to be judged; {} of them were retained.",
            thousands(cohort.users),
            onboarded_span(cohort, latest),
            percent(cohort.retention())
        )
    };
    if cohort.too_young > 0 {
        out.push_str(&format!(
            " {} onboarded later are too recent and were left out.",
            thousands(cohort.too_young)
        ));
    }
    out.push('\n');
    out
}

fn summary(d: &Discovery, top: usize) -> String {
    let s = &d.setup;
    let mut out = format!(
        "Which activities within {} of onboarding ({}) go with being {}?\n",
        s.within.describe(),
        s.onboarding_text(),
        s.retention_text()
    );
    let Some(latest) = d.latest_onboarding else {
        out.push_str("\nThere is no activity data to judge anyone on.\n");
        return out;
    };
    out.push('\n');
    out.push_str(&cohort_text("Cohorts analysed", &d.training, latest));
    if let Some(v) = &d.validation {
        out.push_str(&cohort_text("Validation cohorts", v, latest));
    }

    // Each activity at its best threshold, and only where the interval excludes chance.
    let mut seen = Vec::new();
    let mut best = Vec::new();
    for c in &d.candidates {
        if !seen.contains(&c.activity) {
            seen.push(c.activity.clone());
            best.push(c);
        }
    }
    let clear: Vec<&Candidate> = best
        .iter()
        .copied()
        .filter(|c| c.phi_interval().is_some_and(|(low, _)| low > 0.0))
        .collect();
    let others = best.len() - clear.len();
    if d.candidates.is_empty() {
        out.push_str(&format!(
            "\nNo activity has at least {} users both among those who did it and those who did not; lower the minimum support or widen the cohorts.\n",
            thousands(d.training.min_support)
        ));
    } else if clear.is_empty() {
        out.push_str("\nNo activity goes with retention clearly enough to tell it from chance: every 95% interval of phi reaches zero or below.\n");
    } else {
        out.push_str("\nTop candidates (each activity at its best threshold):\n");
        for (i, c) in clear.iter().take(top).enumerate() {
            out.push_str(&format!("  {}. {}\n", i + 1, candidate_text(c)));
        }
        if clear.len() > top {
            out.push_str(&format!(
                "{} more with a clear association {} in the ranking.\n",
                plural(clear.len() - top, "activity", "activities"),
                if clear.len() - top == 1 { "is" } else { "are" }
            ));
        }
        if others > 0 {
            out.push_str(&format!(
                "{others} other {} no association distinguishable from chance, or a negative one.\n",
                if others == 1 { "activity shows" } else { "activities show" }
            ));
        }
    }
    let tested = d.candidates.len() + d.below_support.len();
    out.push_str(&format!(
        "\nThis is correlation, not causation: users who do these things may simply be the ones who were going to stay anyway. Test a candidate (an experiment that gets more users to do it) before making it a goal. {} tested, so some can look strong by chance; {}\n",
        plural(tested, "candidate was", "candidates were"),
        if d.validation.is_some() {
            "trust those that hold on the validation cohorts."
        } else {
            "check them on later cohorts before trusting them."
        }
    ));
    out
}

fn candidate_text(c: &Candidate) -> String {
    let t = &c.table;
    let times = if c.at_least == 1 {
        "at least once".to_string()
    } else {
        format!("at least {} times", c.at_least)
    };
    let lift = t
        .lift()
        .map(|l| format!("{l:.2}× as likely"))
        .unwrap_or_else(|| "none of the others was".into());
    let interval = c
        .phi_interval()
        .map(|(low, high)| format!(" (95% CI {low:.2} to {high:.2})"))
        .unwrap_or_default();
    let validation = match c.validation {
        Some(v) => match v.verdict {
            Verdict::Holds => " It holds on the validation cohorts.".to_string(),
            Verdict::Weaker => format!(
                " On the validation cohorts it is weaker (phi {:.2}).",
                v.table.phi().unwrap_or_default()
            ),
            Verdict::Fails => " It does NOT hold on the validation cohorts.".to_string(),
            Verdict::TooFewUsers => {
                " The validation cohorts have too few users to tell.".to_string()
            }
        },
        None => String::new(),
    };
    format!(
        "{} {times}: {} of users did; {} of them were retained against {} of the others ({lift}). phi {:.2}{interval}; {} of retained users had done it.{validation}",
        c.activity,
        percent(t.support()),
        percent(t.retention_did()),
        percent(t.retention_not()),
        t.phi().unwrap_or_default(),
        percent(t.recall()),
    )
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeDelta};

    use super::*;
    use crate::analysis::discovery::stats::{self, counts};
    use crate::analysis::discovery::{DateRange, Onboarding, Setup, Span, table_ref};

    #[test]
    fn the_summary_names_each_activity_once_and_says_what_this_is_not() {
        let c = counts();
        let (candidates, below_support) = stats::candidates(&c, 3, 1);
        let setup = Setup {
            onboarded: Onboarding::Event("signup".into()),
            onboarded_time: None,
            activity: table_ref("app", "events"),
            activity_time: "event_time".into(),
            entity: "user_id".into(),
            event_column: "event_type".into(),
            filter: None,
            within: Span::days(1),
            retained: Span::days(14),
            window: Some(Span::days(7)),
            max_k: 3,
        };
        let latest = NaiveDate::from_ymd_opt(2026, 8, 10)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap();
        let d = Discovery {
            setup,
            data_end: Some(latest + TimeDelta::days(21)),
            latest_onboarding: Some(latest),
            training: stats::cohort(DateRange::default(), &c, 1),
            validation: None,
            candidates,
            below_support,
        };
        let text = d.summary(3);
        assert!(
            text.contains("between day 14 and day 21 after onboarding"),
            "{text}"
        );
        assert!(
            text.contains("10 users onboarded up to 2026-08-10 12:00"),
            "{text}"
        );
        assert!(text.contains("1. save at least once"), "{text}");
        assert!(!text.contains("2. save"), "{text}");
        assert!(text.contains("correlation, not causation"), "{text}");
        assert!(text.contains("4 candidates were tested"), "{text}");
        let batch = d.to_record_batch().unwrap();
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(batch.num_columns(), 27);
    }
}
