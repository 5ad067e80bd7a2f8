//! The command line's words for the core's request errors: fields as options (`--from`,
//! `--where`), actions as commands (`lodestar list`).

use lodestar_core::request::{Action, Field, Spelling};

/// Fields as `lodestar`'s options.
#[derive(Debug, Clone, Copy)]
pub struct Flags;

impl Spelling for Flags {
    fn field(&self, field: Field) -> String {
        match field {
            // Positional arguments, not an option.
            Field::Metrics => "the metrics".into(),
            Field::Filter => "--where".into(),
            other => format!("--{}", other.name().replace('_', "-")),
        }
    }

    fn action(&self, action: Action) -> Option<String> {
        Some(
            match action {
                Action::ListMetrics => "`lodestar list`",
                Action::ListTables => "`lodestar sql \"SHOW TABLES\"`",
                Action::BypassCache => "run `lodestar cache clear`, or compute with --no-cache",
                Action::ChooseProject => {
                    "give the project file with --project PATH, or run `lodestar` inside a project to find its lodestar.yaml"
                }
            }
            .into(),
        )
    }
}

/// One error of a chain as the command line shows it: the core's errors in [`Flags`]' words,
/// others as they display.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    match error.downcast_ref::<lodestar_core::Error>() {
        Some(core) => core.spelled(&Flags),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use lodestar_core::request::{DateRange, RequestError, Wording};

    use super::*;

    #[test]
    fn request_errors_name_options() {
        let after =
            DateRange::of_fields("2026-03-10".parse().ok(), "2026-03-01".parse().ok()).unwrap_err();
        let error = lodestar_core::Error::from(after);
        assert_eq!(
            describe(&error),
            "--from 2026-03-10 is after --to 2026-03-01"
        );
        let filter = RequestError::new(Wording::new(vec![
            Field::Filter.into(),
            " uses `status`, which is not a dimension of metric `revenue`".into(),
        ]))
        .with_fix(Wording::new(vec![
            "ask for ".into(),
            Field::Grain.set_to("week"),
            "; ".into(),
            Action::ListMetrics.into(),
            " shows them".into(),
        ]));
        assert_eq!(
            describe(&lodestar_core::Error::from(filter)),
            "--where uses `status`, which is not a dimension of metric `revenue`\n  hint: ask for --grain week; `lodestar list` shows them"
        );
    }

    #[test]
    fn caps_and_missing_projects_name_options() {
        let over = lodestar_core::bounds::Bounds::default()
            .check_list(Field::ActivityEntity, 101)
            .unwrap_err();
        assert_eq!(
            describe(&lodestar_core::Error::from(over)),
            "--activity-entity: 101 items asked, at most 100 (--max-list)\n  hint: ask for fewer at once"
        );
        let missing = lodestar_core::Error::ProjectNotFound {
            start: "/nowhere".into(),
        };
        assert!(describe(&missing).contains("\n  hint: give the project file with --project PATH"));
        // Other errors read as they display.
        let io = std::io::Error::other("disk on fire");
        assert_eq!(describe(&io), "disk on fire");
    }
}
