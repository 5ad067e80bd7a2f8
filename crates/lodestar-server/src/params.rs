//! Query-string parameters: parsed by hand so that every mistake is answered with a 400 that
//! names the parameter, and dimension filters become SQL values, never SQL text.

use chrono::NaiveDate;
use lodestar_core::model::{Grain, quote_ident};
use lodestar_core::request::{self, Field};

use crate::error::ApiError;

/// The parameters of one request, consumed one by one; what is left over is unknown.
#[derive(Debug)]
pub struct Params {
    pairs: Vec<(String, String)>,
    /// The parameters this endpoint takes, for the message about an unknown one.
    known: &'static [&'static str],
}

impl Params {
    pub fn parse(query: Option<&str>, known: &'static [&'static str]) -> Params {
        let pairs = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Params { pairs, known }
    }

    /// Every value of `name`, in order.
    pub fn all(&mut self, name: &str) -> Vec<String> {
        let mut values = Vec::new();
        self.pairs.retain(|(k, v)| {
            if k == name {
                values.push(v.clone());
                false
            } else {
                true
            }
        });
        values
    }

    /// The value of `name`, if given; giving it twice is an error.
    pub fn one(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        let mut values = self.all(name);
        match values.len() {
            0 => Ok(None),
            1 => Ok(values.pop()),
            _ => Err(ApiError::bad_request(format!(
                "parameter `{name}` is given {} times; give it once",
                values.len()
            ))),
        }
    }

    pub fn required(&mut self, name: &str) -> Result<String, ApiError> {
        self.one(name)?
            .ok_or_else(|| ApiError::bad_request(format!("parameter `{name}` is required")))
    }

    pub fn grain(&mut self, name: &str) -> Result<Option<Grain>, ApiError> {
        self.one(name)?
            .map(|text| {
                text.parse::<Grain>().map_err(|message| {
                    ApiError::bad_request(format!("parameter `{name}`: {message}"))
                })
            })
            .transpose()
    }

    /// A `YYYY-MM-DD` date ([`request::parse_date`]) within the calendar requests may name
    /// ([`lodestar_core::bounds::check_date`]).
    pub fn date(&mut self, field: Field) -> Result<Option<NaiveDate>, ApiError> {
        let name = field.name();
        self.one(name)?
            .map(|text| {
                let date = request::parse_date(&text).map_err(|message| {
                    ApiError::bad_request(format!("parameter `{name}`: {message}"))
                })?;
                lodestar_core::bounds::check_date(field, date).map_err(ApiError::from)
            })
            .transpose()
    }

    /// A value read with the core's parser for it (spans, minimum support, date ranges,
    /// brackets, event columns).
    pub fn parsed<T: std::str::FromStr<Err = String>>(
        &mut self,
        name: &str,
    ) -> Result<Option<T>, ApiError> {
        self.one(name)?
            .map(|text| {
                text.parse::<T>().map_err(|message| {
                    ApiError::bad_request(format!("parameter `{name}`: {message}"))
                })
            })
            .transpose()
    }

    pub fn number(&mut self, name: &str) -> Result<Option<u32>, ApiError> {
        self.one(name)?
            .map(|text| {
                text.parse::<u32>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "parameter `{name}`: `{text}` is not a whole number"
                    ))
                })
            })
            .transpose()
    }

    pub fn flag(&mut self, name: &str) -> Result<bool, ApiError> {
        match self.one(name)?.as_deref() {
            None | Some("false") => Ok(false),
            Some("" | "true") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "parameter `{name}`: `{other}` is not true or false"
            ))),
        }
    }

    /// Fails on any parameter no accessor asked for.
    pub fn finish(self) -> Result<(), ApiError> {
        match self.pairs.first() {
            None => Ok(()),
            Some((name, _)) => Err(ApiError::bad_request(format!("unknown parameter `{name}`"))
                .with_hint(if self.known.is_empty() {
                    "this endpoint takes no parameters".to_string()
                } else {
                    format!("this endpoint takes: {}", self.known.join(", "))
                })),
        }
    }
}

/// `filter=dimension:value` parameters, as one SQL predicate: values of the same dimension are
/// alternatives (`IN`), different dimensions must all match (`AND`).
///
/// Dimensions must be among `known` (the project's declared dimensions, written by the
/// operator). A value never appears in the SQL as the client wrote it: quotes and backslashes,
/// the only characters that can end or escape a string literal, become `chr(39)` and
/// `chr(92)` calls between literals without them (`'x' || chr(39) || ' OR '`), which the
/// engine folds back into one constant. So the text means the same whatever the SQL dialect
/// does with backslashes, and `x' OR '1'='1` is a country nobody is from.
pub fn dimension_filter(
    filters: &[String],
    known: &[&str],
) -> Result<Option<(Vec<DimensionFilter>, String)>, ApiError> {
    let mut groups: Vec<DimensionFilter> = Vec::new();
    for filter in filters {
        let Some((dimension, value)) = filter.split_once(':') else {
            return Err(ApiError::bad_request(format!(
                "parameter `filter`: `{filter}` is not `dimension:value`"
            ))
            .with_hint(
                "for example filter=country:FR; repeat filter for more values or dimensions",
            ));
        };
        if !known.contains(&dimension) {
            let mut error = ApiError::bad_request(format!(
                "parameter `filter` uses `{dimension}`, which is not a dimension of any metric"
            ));
            if !known.is_empty() {
                error = error.with_hint(format!("the dimensions are: {}", known.join(", ")));
            }
            return Err(error);
        }
        match groups.iter_mut().find(|g| g.dimension == dimension) {
            Some(group) => group.values.push(value.to_string()),
            None => groups.push(DimensionFilter {
                dimension: dimension.to_string(),
                values: vec![value.to_string()],
            }),
        }
    }
    if groups.is_empty() {
        return Ok(None);
    }
    let predicate = groups
        .iter()
        .map(|g| {
            let values: Vec<String> = g.values.iter().map(|v| string_sql(v)).collect();
            format!("{} IN ({})", quote_ident(&g.dimension), values.join(", "))
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    Ok(Some((groups, predicate)))
}

/// A text value as an SQL expression with no quote or backslash inside a literal.
fn string_sql(value: &str) -> String {
    let mut parts = Vec::new();
    let mut run = String::new();
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            if !run.is_empty() {
                parts.push(format!("'{}'", std::mem::take(&mut run)));
            }
            parts.push(format!("chr({})", u32::from(c)));
        } else {
            run.push(c);
        }
    }
    if !run.is_empty() || parts.is_empty() {
        parts.push(format!("'{run}'"));
    }
    if parts.len() == 1 {
        parts.pop().unwrap_or_default()
    } else {
        format!("({})", parts.join(" || "))
    }
}

/// The values one dimension is filtered to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DimensionFilter {
    pub dimension: String,
    pub values: Vec<String>,
}

#[cfg(test)]
mod tests {
    use lodestar_core::datafusion::arrow::array::AsArray;
    use lodestar_core::datafusion::arrow::compute::cast;
    use lodestar_core::datafusion::arrow::datatypes::DataType;
    use lodestar_core::datafusion::prelude::SessionContext;

    use super::*;

    const HOSTILE: [&str; 9] = [
        "x' OR '1'='1",
        "FR'); DROP TABLE orders; --",
        // With backslash escapes (DataFusion's default dialect has them), doubling quotes is
        // not enough: this value would close the literal early and add `OR 1=1`.
        "\\') OR 1=1 OR country IN ('",
        "back\\slash\\",
        "new\nline",
        "'",
        "",
        "naïve ✓",
        "\"country\"",
    ];

    /// The real SQL engine evaluates each value's expression to the value itself.
    #[tokio::test]
    async fn hostile_values_evaluate_to_themselves() {
        let ctx = SessionContext::new();
        for value in HOSTILE {
            let sql = format!("SELECT {} AS v", string_sql(value));
            let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
            let column = cast(batches[0].column(0), &DataType::Utf8).unwrap();
            assert_eq!(column.as_string::<i32>().value(0), value, "{sql}");
        }
    }

    #[test]
    fn dimensions_combine_with_and_values_with_in() {
        let filters = ["country:FR", "platform:ios", "country:DE"].map(String::from);
        let (groups, sql) = dimension_filter(&filters, &["country", "platform"])
            .unwrap()
            .unwrap();
        assert_eq!(groups[0].values, ["FR", "DE"]);
        assert_eq!(
            sql,
            "\"country\" IN ('FR', 'DE') AND \"platform\" IN ('ios')"
        );
    }

    #[test]
    fn only_declared_dimensions_are_filtered_on() {
        let error = dimension_filter(&["country=FR".to_string()], &["country"]).unwrap_err();
        assert!(
            error
                .message
                .contains("`country=FR` is not `dimension:value`")
        );
        let hostile = "country\" = 'x' OR \"1:x".to_string();
        let error = dimension_filter(&[hostile], &["country"]).unwrap_err();
        assert!(
            error
                .message
                .contains("which is not a dimension of any metric")
        );
    }
}
