//! The report's product rules, stated once for `lodestar report`, the server's report and the
//! dashboard's overview: which periods of a series are complete, where retention comes from
//! when no one names it, its cohort length, and where discovery onboards users.

use chrono::NaiveDate;
use lodestar_core::discovery::{DiscoveryRequest, Onboarding};
use lodestar_core::model::{Grain, MetricKind, Project, TableRef};
use lodestar_core::request::EventColumn;
use lodestar_core::retention::EventSpec;

/// The grain of retention's cohorts when no grain is asked for.
pub const RETENTION_GRAIN: Grain = Grain::Week;

/// How many of `periods` (in order) are complete: those up to the last complete period. All
/// of them when the reader chose the period (`period_asked`: they see what they asked for) or
/// when no period is complete yet. A period the data covers only in part would read as a fall,
/// so the charts draw the rest apart.
pub fn complete_count(
    periods: &[NaiveDate],
    last_complete: Option<NaiveDate>,
    period_asked: bool,
) -> usize {
    periods
        .iter()
        .take_while(|d| period_asked || last_complete.is_none_or(|p| **d <= p))
        .count()
}

/// Retention's cohort length: the one asked for, else the report's grain when cohorts can
/// have it (a day, a week or a month), else a week.
pub fn retention_grain(asked: Option<Grain>, report: Option<Grain>) -> Grain {
    asked.unwrap_or(match report {
        Some(grain @ (Grain::Day | Grain::Week | Grain::Month)) => grain,
        _ => RETENTION_GRAIN,
    })
}

/// The project's retention, for a report not told which: its first retention metric's cohort
/// and activity, with their entity and filters. `None`: the project has no retention metric.
pub fn declared_retention(project: &Project) -> Option<(EventSpec, EventSpec)> {
    let r = project.metrics.values().find_map(|m| match &m.kind {
        MetricKind::Retention(r) => Some(r),
        _ => None,
    })?;
    let spec = |table: &TableRef, time: &str, filter: &Option<String>| EventSpec {
        table: table.clone(),
        time: time.to_string(),
        entity: r.entity.clone(),
        filter: filter.clone(),
    };
    Some((
        spec(&r.cohort, &r.cohort_time, &r.cohort_filter),
        spec(&r.activity, &r.activity_time, &r.activity_filter),
    ))
}

/// The retention section's cohort and activity: those asked for (with `entity`), else the
/// project's ([`declared_retention`]); `None` when there is neither.
pub fn retention_events(
    project: &Project,
    asked: Option<&(EventColumn, EventColumn)>,
    entity: &str,
) -> Option<(EventSpec, EventSpec)> {
    match asked {
        Some((cohort, activity)) => Some((
            cohort.clone().events(entity.to_string(), None),
            activity.clone().events(entity.to_string(), None),
        )),
        None => declared_retention(project),
    }
}

/// Where discovery onboards users: at `onboarded` when given (an event type or a table's
/// column, with `entity`), else at the retention cohort's event, with retention's activity
/// table and entity; `None` when neither is known.
pub fn discovery_onboarding(
    project: &Project,
    onboarded: Option<&str>,
    retention: Option<&(EventSpec, EventSpec)>,
    entity: &str,
) -> Option<DiscoveryRequest> {
    let request = match (onboarded, retention) {
        (Some(text), _) => {
            let mut request = DiscoveryRequest::new(Onboarding::of(project, text));
            request.entity = Some(entity.to_string());
            request
        }
        (None, Some((cohort, activity))) => {
            let mut request = DiscoveryRequest::new(Onboarding::Column {
                table: cohort.table.clone(),
                time: Some(cohort.time.clone()),
            });
            request.activity = Some(activity.table.clone());
            request.activity_time = Some(activity.time.clone());
            request.entity = Some(cohort.entity.clone());
            request
        }
        (None, None) => return None,
    };
    Some(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    fn project(yaml: &str) -> Project {
        let dir = std::env::temp_dir().join(format!(
            "lodestar-report-rules-{}-{}",
            std::process::id(),
            yaml.len()
        ));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let file = dir.join("lodestar.yaml");
        std::fs::write(&file, yaml).unwrap();
        let project = lodestar_core::config::load(&file).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        project
    }

    const SOURCES: &str = "sources:\n  app: { connector: files, path: data }\n";

    #[test]
    fn periods_after_the_last_complete_one_are_apart() {
        // Weeks of 03-02, 03-09, 03-16 and 03-23; the data ends inside the last one, so the
        // last complete week is 03-16: three complete, one apart.
        let weeks = [
            day("2026-03-02"),
            day("2026-03-09"),
            day("2026-03-16"),
            day("2026-03-23"),
        ];
        assert_eq!(complete_count(&weeks, Some(day("2026-03-16")), false), 3);
        // A period the reader chose: everything is shown as is.
        assert_eq!(complete_count(&weeks, Some(day("2026-03-16")), true), 4);
        // No complete period known (no data): nothing is set apart.
        assert_eq!(complete_count(&weeks, None, false), 4);
        // The last complete period before the first: all are apart.
        assert_eq!(complete_count(&weeks, Some(day("2026-02-23")), false), 0);
        assert_eq!(complete_count(&[], Some(day("2026-03-16")), false), 0);
    }

    #[test]
    fn retention_cohorts_follow_the_report_grain_when_they_can() {
        assert_eq!(retention_grain(None, None), Grain::Week);
        assert_eq!(retention_grain(None, Some(Grain::Day)), Grain::Day);
        assert_eq!(retention_grain(None, Some(Grain::Month)), Grain::Month);
        // Cohorts of a quarter or a year would be too few: a week instead.
        assert_eq!(retention_grain(None, Some(Grain::Quarter)), Grain::Week);
        assert_eq!(retention_grain(None, Some(Grain::Year)), Grain::Week);
        // Asked for: as asked, whatever the report's grain.
        assert_eq!(
            retention_grain(Some(Grain::Month), Some(Grain::Day)),
            Grain::Month
        );
    }

    #[test]
    fn retention_falls_back_on_the_projects_first_retention_metric() {
        let without = project(&format!(
            "{SOURCES}metrics:\n  events: {{ table: app.events, time: event_time, measure: count(*) }}\n"
        ));
        assert_eq!(declared_retention(&without), None);
        assert_eq!(retention_events(&without, None, "user_id"), None);

        let with = project(&format!(
            "{SOURCES}metrics:\n  events: {{ table: app.events, time: event_time, measure: count(*) }}\n  d1:\n    retention: {{ cohort: app.users.signed_up_at, activity: app.events.event_time, entity: guest_id, after: 1d }}\n"
        ));
        let (cohort, activity) = retention_events(&with, None, "user_id").unwrap();
        assert_eq!(cohort.table.to_string(), "app.users");
        assert_eq!(cohort.time, "signed_up_at");
        assert_eq!(activity.table.to_string(), "app.events");
        assert_eq!(activity.time, "event_time");
        // The metric's entity, not the report's default.
        assert_eq!(
            (cohort.entity.as_str(), activity.entity.as_str()),
            ("guest_id", "guest_id")
        );

        // Named columns win over the project's metric, with the entity given.
        let asked: (EventColumn, EventColumn) = (
            "app.signups.at".parse().unwrap(),
            "app.visits.at".parse().unwrap(),
        );
        let (cohort, activity) = retention_events(&with, Some(&asked), "account_id").unwrap();
        assert_eq!(cohort.table.to_string(), "app.signups");
        assert_eq!(activity.table.to_string(), "app.visits");
        assert_eq!(cohort.entity, "account_id");

        // Discovery onboards at the retention cohort, in its activity table, by its entity.
        let fallback = (cohort.clone(), activity.clone());
        let request = discovery_onboarding(&with, None, Some(&fallback), "user_id").unwrap();
        assert_eq!(
            request.onboarded,
            Onboarding::Column {
                table: cohort.table,
                time: Some("at".into())
            }
        );
        assert_eq!(request.activity, Some(activity.table));
        assert_eq!(request.activity_time.as_deref(), Some("at"));
        assert_eq!(request.entity.as_deref(), Some("account_id"));
        // Without retention nor onboarding, there is no discovery.
        assert_eq!(discovery_onboarding(&with, None, None, "user_id"), None);
        // `onboarded` wins, with the report's entity and the default activity table.
        let request = discovery_onboarding(
            &with,
            Some("app.users.signed_up_at"),
            Some(&fallback),
            "user_id",
        )
        .unwrap();
        assert_eq!(request.activity, None);
        assert_eq!(request.entity.as_deref(), Some("user_id"));
    }
}
