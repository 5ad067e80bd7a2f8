//! Parsing a user's SQL expression with bounded work.
//!
//! sqlparser's expression parser tries several constructs one way and, when that fails, again
//! another: each part of a dotted name as an expression then as a name, `CAST(`, `POSITION(`,
//! `ARRAY[` or `INTERVAL` as syntax then as a function or a name. On text that does not parse,
//! every such attempt around the error repeats the work inside it, so the time grows
//! exponentially with the nesting: 14 levels of `POSITION(` took five seconds, and the
//! `formula` fuzz target found inputs of a few hundred bytes that ran for minutes
//! (docs/fuzzing.md). A metric's formula or a request's filter would hold a query slot, or
//! `lodestar validate`, that long.
//!
//! So the parser runs with a budget of steps proportional to the expression's length. A step
//! is one start of an operand, counted by the one hook sqlparser calls there,
//! [`Dialect::parse_prefix`]; the error that ends a parse over budget is
//! `RecursionLimitExceeded`, the only one sqlparser does not backtrack from. Expressions that
//! parse take at most one step per token (every seed and corpus input of the `formula` fuzz
//! target; nested `position(a, b)` calls, which are tried first as `POSITION(a IN b)`, take
//! about two), so the budget only refuses text that sends the parser back and forth.

use std::any::TypeId;
use std::cell::Cell;

use datafusion::sql::sqlparser::ast::Expr;
use datafusion::sql::sqlparser::dialect::{Dialect, GenericDialect};
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// The deepest the parser may recurse (sqlparser's own default is 50).
///
/// Real expressions need far fewer levels (a dozen nested calls take 13), and each level
/// costs stack: sqlparser at 50 levels overflowed a test thread's 2 MiB stack in a debug build.
const MAX_DEPTH: usize = 24;
/// The stack an operand may still need when the parser starts one.
///
/// Not every recursion of sqlparser goes through its depth limit: `INTERVAL INTERVAL …`
/// recurses from operand to operand, as deep as there are words, and 2,000 of them overflowed
/// a 2 MiB thread (a tokio worker's size), which aborts the whole process. So a step is refused
/// while the stack has less than this left; one level of a debug build takes about 100 KiB.
const STACK_RED_ZONE: usize = 256 * 1024;
/// Steps allowed whatever the length.
const BASE_STEPS: usize = 256;
/// Steps allowed per token.
const STEPS_PER_TOKEN: usize = 8;

/// Parses one SQL expression, refusing trailing text (`x = 1; DROP ...`), in work linear in its
/// length.
pub(crate) fn parse_expr(sql: &str) -> Result<Expr, String> {
    // With their locations, so that errors say where (`at Line: 1, Column: 14`).
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| e.to_string())?;
    let count = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .count();
    let dialect = Budgeted::new(BASE_STEPS + STEPS_PER_TOKEN * count);
    let message = |e: ParserError| {
        if dialect.exhausted() {
            return format!(
                "the expression is nested too deeply to parse within {} steps for its {count} \
                 tokens; write it with less nesting",
                dialect.budget
            );
        }
        if e == ParserError::RecursionLimitExceeded || dialect.out_of_stack.get() {
            return format!(
                "the expression is nested more than {MAX_DEPTH} levels deep; \
                 write it with less nesting"
            );
        }
        let text = e.to_string();
        text.strip_prefix("sql parser error: ")
            .map(str::to_string)
            .unwrap_or(text)
    };
    let mut parser = Parser::new(&dialect)
        .with_recursion_limit(MAX_DEPTH)
        .with_tokens_with_locations(tokens);
    let expr = parser.parse_expr().map_err(message)?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(format!("unexpected `{}` after the expression", next.token));
    }
    Ok(expr)
}

/// sqlparser's [`GenericDialect`] with a budget of parsing steps.
///
/// It answers every question as `GenericDialect` does, including "which dialect is this"
/// (sqlparser's `dialect_of!` checks), so it parses the same language; the unit test
/// `parses_as_the_generic_dialect` holds it to that over the fuzz target's seeds.
#[derive(Debug)]
struct Budgeted {
    budget: usize,
    left: Cell<usize>,
    /// A step was refused for lack of stack.
    out_of_stack: Cell<bool>,
}

impl Budgeted {
    fn new(budget: usize) -> Self {
        Budgeted {
            budget,
            left: Cell::new(budget),
            out_of_stack: Cell::new(false),
        }
    }

    fn exhausted(&self) -> bool {
        self.left.get() == 0
    }
}

/// Delegates `GenericDialect`'s answers to yes-or-no questions.
macro_rules! as_generic {
    ($($name:ident)*) => {
        $(fn $name(&self) -> bool {
            GenericDialect.$name()
        })*
    };
}

impl Dialect for Budgeted {
    fn dialect(&self) -> TypeId {
        TypeId::of::<GenericDialect>()
    }

    fn parse_prefix(&self, _: &mut Parser) -> Option<Result<Expr, ParserError>> {
        if stacker::remaining_stack().is_some_and(|left| left < STACK_RED_ZONE) {
            self.out_of_stack.set(true);
            return Some(Err(ParserError::RecursionLimitExceeded));
        }
        match self.left.get() {
            0 => Some(Err(ParserError::RecursionLimitExceeded)),
            left => {
                self.left.set(left - 1);
                None
            }
        }
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        GenericDialect.is_delimited_identifier_start(ch)
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        GenericDialect.is_identifier_start(ch)
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        GenericDialect.is_identifier_part(ch)
    }

    // Every `-> bool` method `GenericDialect` overrides (sqlparser 0.62, dialect/generic.rs).
    as_generic!(
        supports_unicode_string_literal supports_partition_by_after_order_by
        supports_array_join_syntax supports_group_by_expr supports_group_by_with_modifier
        supports_left_associative_joins_without_parens supports_connect_by
        supports_match_recognize supports_pipe_operator supports_start_transaction_modifier
        supports_window_function_null_treatment_arg supports_dictionary_syntax
        supports_window_clause_named_window_reference supports_parenthesized_set_variables
        supports_select_wildcard_except support_map_literal_syntax allow_extract_custom
        allow_extract_single_quotes supports_extract_comma_syntax
        supports_create_view_comment_syntax supports_parens_around_table_factor
        supports_values_as_table_factor supports_create_index_with_clause
        supports_explain_with_utility_options supports_limit_comma supports_update_order_by
        supports_from_first_select supports_projection_trailing_commas
        supports_asc_desc_in_column_definition supports_try_convert
        supports_bitwise_shift_operators supports_comment_on supports_load_extension
        supports_named_fn_args_with_assignment_operator supports_struct_literal
        supports_empty_projections supports_nested_comments supports_multiline_comment_hints
        supports_user_host_grantee supports_string_escape_constant
        supports_array_typedef_with_brackets supports_match_against supports_set_names
        supports_comma_separated_set_assignments supports_filter_during_aggregation
        supports_select_wildcard_exclude supports_data_type_signed_suffix
        supports_interval_options supports_quote_delimited_string
        supports_select_wildcard_replace supports_select_wildcard_ilike
        supports_select_wildcard_rename supports_optimize_table supports_install
        supports_detach supports_prewhere supports_with_fill supports_limit_by
        supports_interpolate supports_settings supports_select_format
        supports_comment_optimizer_hint supports_constraint_keyword_without_name
        supports_key_column_option supports_comma_separated_trim supports_cte_without_as
        supports_select_item_multi_column_alias supports_xml_expressions
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What sqlparser makes of `sql` with `dialect` and no budget, as text to compare.
    fn parsed_with(dialect: &dyn Dialect, sql: &str) -> String {
        let result = Parser::new(dialect)
            .with_recursion_limit(MAX_DEPTH)
            .try_with_sql(sql)
            .and_then(|mut p| {
                let expr = p.parse_expr()?;
                Ok((expr, p.peek_token().token))
            });
        format!("{result:?}")
    }

    /// The budgeted dialect parses the same language as `GenericDialect`: the same tree or the
    /// same error for the `formula` fuzz target's seeds and for an expression using each
    /// syntax a `GenericDialect` flag governs. A method left out of `as_generic!` shows here.
    /// (The target's whole 8,879-input corpus compared equal when this was written.)
    #[test]
    fn errors_say_where_and_trailing_text_is_refused() {
        assert_eq!(
            parse_expr("sum(amount * )").unwrap_err(),
            "Expected: an expression, found: ) at Line: 1, Column: 14"
        );
        assert_eq!(
            parse_expr("x = 1; DROP TABLE t").unwrap_err(),
            "unexpected `;` after the expression"
        );
    }

    #[test]
    fn parses_as_the_generic_dialect() {
        let seeds = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/seeds/formula");
        let mut inputs: Vec<String> = std::fs::read_dir(seeds)
            .unwrap()
            .filter_map(|entry| std::fs::read_to_string(entry.unwrap().path()).ok())
            .collect();
        assert!(inputs.len() >= 4, "the seeds of {seeds}");
        inputs.extend(
            [
                "U&'d\\0061t\\+000061'",
                "E'a\\nb' || 'x'",
                "{'a': 1, 'b': 2}",
                "MAP {'a': 1}",
                "STRUCT(1 AS a, 'x' AS b)",
                "EXTRACT(YEAR FROM t) + EXTRACT('day' FROM t) + EXTRACT(custom FROM t)",
                "EXTRACT(YEAR, t)",
                "TRY_CONVERT(INT, x)",
                "a << 2 | b >> 1",
                "f(a => 1, b := 2)",
                "count(*) FILTER (WHERE x > 1)",
                "first_value(x) IGNORE NULLS OVER (PARTITION BY a ORDER BY b)",
                "INTERVAL '1' DAY + INTERVAL '2 hours'",
                "MATCH (a, b) AGAINST ('x')",
                "TRIM(a, 'x') || TRIM(BOTH 'x' FROM a)",
                "CAST(x AS INT UNSIGNED)",
                "Q'[it's]'",
                "x::INT[] @> ARRAY[1, 2]",
                "a[1:2][3] + b.c['k'].d",
                "position(a IN b) + position(a, b)",
                "CASE x WHEN 1 THEN 'a' ELSE 'b' END",
                "x IS DISTINCT FROM y AND x NOT BETWEEN 1 AND 2",
                "a LIKE 'x%' ESCAPE '\\' OR a ILIKE ANY (ARRAY['y'])",
                "SUBSTRING(a FROM 1 FOR 2) || OVERLAY(a PLACING 'b' FROM 1)",
                "CEIL(x TO DAY) + FLOOR(y)",
                "x AT TIME ZONE 'UTC'",
                "DATE '2026-01-01' + TIMESTAMP '2026-01-01 00:00:00'",
                "(SELECT 1)",
                "EXISTS (SELECT 1) AND x IN (1, 2) AND y IN (SELECT 1)",
                "a.* ",
                "$1 + ? + :name + @var",
                "x COLLATE \"C\"",
                "/* comment /* nested */ */ x -- tail",
                "CONVERT(x, INT)",
                "interval.a + date.b",
            ]
            .map(String::from),
        );
        for sql in &inputs {
            let generic = parsed_with(&GenericDialect {}, sql);
            let budgeted = parsed_with(&Budgeted::new(usize::MAX), sql);
            assert_eq!(generic, budgeted, "{sql}");
        }
    }

    /// Each input here held sqlparser for minutes or more: the five the `formula` fuzz target
    /// found (dotted names through placeholders, subscripts and operators) and the nestings
    /// of `POSITION(`, `CAST(`, `INTERVAL` and `a.b[` that try each level several ways. Each
    /// is refused, over the step budget or the depth limit; the test finishing is the other
    /// half of the check.
    #[test]
    fn backtracking_inputs_are_refused_within_the_budget() {
        let found = [
            "s *ookii.ooki.gg.oki.oog.oki.ooki.gg.ki.gg.oki.g.gg.i.gg.oki.oog.oki.ooki.gg.ki.gg.oki.g.gg.oki.g.oki.g.",
            "$.ccccypy.c.kccp.cu.nckbo.py.c.kcc.$.ccccypy.c.kpccc.c.knkbo.py.c.kcc.$.ccccypy.c.kpccc.c.knubo.py.c.kcc.->->a.",
            "[obay.ay.pe.kpd.ki$[ay.i$y.pe.ky.pea$.pe.kpd.ki$[ay.$aobay.ay.pe.kpd.ki$[ay.i$y.pe.ky.pea$.pe.kpd.ki$[ay.$ay.pe.ky.pea$.%:.%:y.pe.ky.pea$.%:.%:",
            "ip_qpv0.v5.[m.p4.M[p.erer_qpv0.v5.[qpv0.v5.[m.p4.pv0.v5.[m.p4.M[p.erer_qpv1.v5.[m.p4.m.p4.pv0.v5.[m.p4.M[p.erer_qpv1.v5.[m.p4.M[m.p4.M[p.ere1",
        ];
        // The fifth is not UTF-8 throughout: the target reads it lossily, as here.
        let fifth = String::from_utf8_lossy(include_bytes!(
            "../../../../fuzz/regressions/formula/timeout-operator-subscript-chain"
        ));
        let built = [
            format!("{}x", "POSITION(".repeat(20)),
            format!("{}x", "CAST(INTERVAL INTERVAL ".repeat(12)),
            format!("{}x", "a.b[".repeat(30)),
            format!("{}x FROM", "INTERVAL POSITION(POSITION(".repeat(8)),
            // Recursion that sqlparser's depth limit does not count.
            format!("{}1", "INTERVAL ".repeat(5_000)),
            format!("{}1", "- INTERVAL ".repeat(5_000)),
        ];
        let all = found.iter().copied().chain([&*fifth]);
        for sql in all.chain(built.iter().map(String::as_str)) {
            let error = parse_expr(sql).unwrap_err();
            assert!(error.contains("nested"), "{sql}: {error}");
        }
    }

    #[test]
    fn real_expressions_parse_within_the_budget() {
        for sql in [
            "round(coalesce(sum(CASE WHEN (a.x > 0 AND (b.y < 1 OR c.z IS NULL)) \
             THEN abs(a.x - coalesce(b.y, 0)) END), 0) / nullif(count(DISTINCT a.id), 0), 2)",
            "f(g(h(i(j(k(l(m(n(o(p(q(x))))))))))))",
            "position(position(position(position(position(a, b), c), d), e), f)",
            "((((((((((((a))))))))))))",
            "a[1].b + [1, 2, 3][2] + t.x[2]",
            "\"cat\".schema.tbl.col + t.x * 1.5",
            "a.b.c.d.e.f.g.h.i.j.k.l",
        ] {
            parse_expr(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
}
