//! The structural checks of a project that need no data: valid names, references to
//! metrics that exist, no cycles, at most [`MAX_NORTH_STARS`] north stars.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, visit_expressions};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::MAX_NORTH_STARS;
use crate::project::error::{Error, Location, Result, Subject, did_you_mean};
use crate::project::model::{Metric, MetricKind, Project};

pub(super) fn check_name(name: &str, location: &Location, subject: Subject) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            location: location.clone(),
            subject,
            message: format!("`{name}` is not a valid name"),
            hint: Some("names are letters, digits and underscores, not starting with a digit, so that SQL can use them as they are".into()),
        })
    }
}

/// Every name a metric refers to must be a metric.
pub(super) fn check_references(project: &Project) -> Result<()> {
    for metric in project.metrics.values() {
        let mut refs: Vec<(&str, &'static str)> = metric
            .parents()
            .into_iter()
            .map(|p| {
                let field = match metric.kind {
                    MetricKind::Ratio { .. } => "ratio",
                    MetricKind::Derived { .. } => "derived",
                    _ => "cumulative",
                };
                (p, field)
            })
            .collect();
        refs.extend(metric.inputs.iter().map(|i| (i.as_str(), "inputs")));
        refs.extend(
            metric
                .guardrails
                .iter()
                .map(|g| (g.metric.as_str(), "guardrails")),
        );
        let formula_refs = match &metric.formula {
            Some(f) => expression_references(f).map_err(|m| Error::Invalid {
                location: metric.location_of("formula").clone(),
                subject: Subject::Metric(metric.name.clone()),
                message: format!("cannot parse `formula`: {m}"),
                hint: None,
            })?,
            None => vec![],
        };
        refs.extend(formula_refs.iter().map(|f| (f.as_str(), "formula")));
        for (name, field) in refs {
            if !project.metrics.contains_key(name) {
                return Err(Error::Invalid {
                    location: metric.location_of_item(field, name).clone(),
                    subject: Subject::Metric(metric.name.clone()),
                    message: format!("`{field}` refers to `{name}`, which is not a metric"),
                    hint: did_you_mean(name, project.metrics.keys().map(String::as_str)),
                });
            }
            if name == metric.name {
                return Err(Error::Invalid {
                    location: metric.location_of_item(field, name).clone(),
                    subject: Subject::Metric(metric.name.clone()),
                    message: format!("`{field}` refers to the metric itself"),
                    hint: None,
                });
            }
        }
        if let Some(formula) = &metric.formula {
            let unlisted: Vec<&String> = formula_refs
                .iter()
                .filter(|r| !metric.inputs.contains(r))
                .collect();
            if !unlisted.is_empty() {
                return Err(Error::Invalid {
                    location: metric.location_of("formula").clone(),
                    subject: Subject::Metric(metric.name.clone()),
                    message: format!("`formula` ({formula}) uses {}, which {} not in `inputs`", join_ticked(&unlisted), if unlisted.len() == 1 { "is" } else { "are" }),
                    hint: Some("a formula links a metric to its inputs: list every metric it uses under `inputs`".into()),
                });
            }
        }
    }
    Ok(())
}

fn join_ticked(names: &[&String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The edges of a graph over metrics.
type Edges = Box<dyn Fn(&Metric) -> Vec<&str>>;

/// Neither the computation graph nor the metric tree may loop.
pub(super) fn check_cycles(project: &Project) -> Result<()> {
    let graphs: [(&str, Edges); 2] = [
        ("is computed from", Box::new(|m: &Metric| m.parents())),
        (
            "has as input",
            Box::new(|m: &Metric| m.inputs.iter().map(String::as_str).collect()),
        ),
    ];
    for (relation, edges) in graphs {
        // Depth-first search with colours; the path gives the cycle to show.
        let mut done: BTreeSet<&str> = BTreeSet::new();
        for start in project.metrics.keys() {
            let mut path: Vec<&str> = Vec::new();
            if let Some(cycle) = visit(project, start, &edges, &mut path, &mut done) {
                let first = &project.metrics[cycle[0]];
                return Err(Error::Invalid {
                    location: first.location.clone(),
                    subject: Subject::Metric(first.name.clone()),
                    message: format!(
                        "cycle: {}",
                        cycle
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(&format!(" {relation} "))
                    ),
                    hint: Some(
                        "a metric cannot depend on itself, directly or through others".into(),
                    ),
                });
            }
        }
    }
    Ok(())
}

fn visit<'a>(
    project: &'a Project,
    name: &'a str,
    edges: &dyn Fn(&'a Metric) -> Vec<&'a str>,
    path: &mut Vec<&'a str>,
    done: &mut BTreeSet<&'a str>,
) -> Option<Vec<&'a str>> {
    if let Some(pos) = path.iter().position(|p| *p == name) {
        let mut cycle = path[pos..].to_vec();
        cycle.push(name);
        return Some(cycle);
    }
    if done.contains(name) {
        return None;
    }
    let metric = project.metrics.get(name)?;
    path.push(name);
    for next in edges(metric) {
        if let Some(cycle) = visit(project, next, edges, path, done) {
            return Some(cycle);
        }
    }
    path.pop();
    done.insert(name);
    None
}

pub(super) fn check_north_stars(project: &Project, _loc: &Location) -> Result<()> {
    let stars: Vec<&Metric> = project.north_stars().collect();
    if stars.len() > MAX_NORTH_STARS {
        let extra = stars[MAX_NORTH_STARS];
        return Err(Error::Invalid {
            location: extra.location.clone(),
            subject: Subject::Metric(extra.name.clone()),
            message: format!(
                "this is north star number {}, but a project has at most {MAX_NORTH_STARS} ({})",
                stars.len(),
                stars.iter().map(|m| format!("`{}`", m.name)).collect::<Vec<_>>().join(", ")
            ),
            hint: Some("a North Star is the one measure of the value customers get: make the others `inputs` of it".into()),
        });
    }
    Ok(())
}

/// The metric names an expression over metrics uses, in order of first use.
pub(super) fn expression_references(expr: &str) -> std::result::Result<Vec<String>, String> {
    let parsed = Parser::new(&GenericDialect {})
        .try_with_sql(expr)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| e.to_string())?;
    let mut names: Vec<String> = Vec::new();
    let _ = visit_expressions(&parsed, |e| {
        if let SqlExpr::Identifier(ident) = e
            && !names.contains(&ident.value)
        {
            names.push(ident.value.clone());
        }
        ControlFlow::<()>::Continue(())
    });
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_metric_references_in_expressions() {
        assert_eq!(
            expression_references("revenue / (orders + revenue) * 2").unwrap(),
            vec!["revenue", "orders"]
        );
    }
}
