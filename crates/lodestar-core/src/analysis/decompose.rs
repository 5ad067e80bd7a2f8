//! Splitting a metric's change between its inputs, exactly, from its `formula`.
//!
//! Three methods, each of which makes the parts add up to the formula's change with nothing
//! left over:
//! - **difference**, for linear formulas (`a + b - 2 * c`): each input's part is its
//!   coefficient times its change;
//! - **LMDI** (log-mean Divisia index), for products and quotients (`a * b / c`) when every
//!   value is positive: input `x` with exponent `e` gets `L(V₁, V₀) · e · ln(x₁ / x₀)`, where
//!   `L(p, q) = (p − q) / (ln p − ln q)` is the logarithmic mean of the formula's two values;
//! - **Shapley**, for anything else (and for products with zeros): each input's part is its
//!   marginal effect averaged over every order in which the inputs could change.

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, UnaryOperator, Value};

use crate::query::sql::parse_expr;

/// More inputs than this make Shapley's 2ⁿ evaluations pointless to show.
const MAX_SHAPLEY_INPUTS: usize = 12;

/// How a change was split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Difference,
    Lmdi,
    Shapley,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Difference => "difference",
            Method::Lmdi => "lmdi",
            Method::Shapley => "shapley",
        }
    }
}

/// The parts of a formula's change, one per input, in the formula's order of inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Decomposition {
    pub method: Method,
    pub parts: Vec<(String, f64)>,
    /// The formula's value before and after (the parts sum to their difference).
    pub before: f64,
    pub after: f64,
}

/// A parsed formula over input metrics.
#[derive(Debug, Clone)]
pub struct Formula {
    expr: Expr,
    inputs: Vec<String>,
}

impl Formula {
    /// Parses `text`; only numbers, input names, `+ - * /` and parentheses are allowed, so
    /// that the formula can be evaluated and decomposed.
    pub fn parse(text: &str) -> Result<Formula, String> {
        let expr = parse_expr(text)?;
        let mut inputs = Vec::new();
        check(&expr, &mut inputs)?;
        Ok(Formula { expr, inputs })
    }

    pub fn inputs(&self) -> &[String] {
        &self.inputs
    }

    /// The formula's value; `None` when an input is missing or it divides by zero.
    pub fn eval(&self, values: &HashMap<String, f64>) -> Option<f64> {
        eval(&self.expr, values).filter(|v| v.is_finite())
    }

    /// Splits `eval(after) - eval(before)` between the inputs.
    pub fn decompose(
        &self,
        before: &HashMap<String, f64>,
        after: &HashMap<String, f64>,
    ) -> Option<Decomposition> {
        let v0 = self.eval(before)?;
        let v1 = self.eval(after)?;
        let delta = |name: &str| Some(after.get(name)? - before.get(name)?);
        if let Some((coefficients, _)) = linear(&self.expr) {
            let parts = self
                .inputs
                .iter()
                .map(|name| {
                    let c = coefficients.get(name).copied().unwrap_or(0.0);
                    Some((name.clone(), c * delta(name)?))
                })
                .collect::<Option<Vec<_>>>()?;
            return Some(Decomposition {
                method: Method::Difference,
                parts,
                before: v0,
                after: v1,
            });
        }
        if let Some((exponents, _)) = product(&self.expr) {
            let positive = |values: &HashMap<String, f64>| {
                self.inputs
                    .iter()
                    .all(|n| values.get(n).is_some_and(|v| *v > 0.0))
            };
            if v0 > 0.0 && v1 > 0.0 && positive(before) && positive(after) {
                let weight = log_mean(v1, v0);
                let parts = self
                    .inputs
                    .iter()
                    .map(|name| {
                        let e = exponents.get(name).copied().unwrap_or(0.0);
                        (name.clone(), weight * e * (after[name] / before[name]).ln())
                    })
                    .collect();
                return Some(Decomposition {
                    method: Method::Lmdi,
                    parts,
                    before: v0,
                    after: v1,
                });
            }
        }
        self.shapley(before, after, v0, v1)
    }

    fn shapley(
        &self,
        before: &HashMap<String, f64>,
        after: &HashMap<String, f64>,
        v0: f64,
        v1: f64,
    ) -> Option<Decomposition> {
        let n = self.inputs.len();
        if n > MAX_SHAPLEY_INPUTS {
            return None;
        }
        // f(mask): the formula with the inputs in `mask` at their new values.
        let mut values = before.clone();
        let mut f = vec![0.0; 1 << n];
        for (mask, slot) in f.iter_mut().enumerate() {
            for (i, name) in self.inputs.iter().enumerate() {
                let source = if mask & (1 << i) != 0 { after } else { before };
                values.insert(name.clone(), *source.get(name)?);
            }
            *slot = self.eval(&values)?;
        }
        let factorial = |k: usize| (1..=k).map(|x| x as f64).product::<f64>();
        let parts = self
            .inputs
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut part = 0.0;
                for mask in 0..(1usize << n) {
                    if mask & (1 << i) != 0 {
                        continue;
                    }
                    let size = mask.count_ones() as usize;
                    let weight = factorial(size) * factorial(n - size - 1) / factorial(n);
                    part += weight * (f[mask | (1 << i)] - f[mask]);
                }
                (name.clone(), part)
            })
            .collect();
        Some(Decomposition {
            method: Method::Shapley,
            parts,
            before: v0,
            after: v1,
        })
    }
}

/// The logarithmic mean, continuous where its two arguments meet.
fn log_mean(p: f64, q: f64) -> f64 {
    if (p - q).abs() <= f64::EPSILON * p.abs().max(q.abs()) {
        p
    } else {
        (p - q) / (p.ln() - q.ln())
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(text, _) => text.parse().ok(),
        _ => None,
    }
}

fn check(expr: &Expr, inputs: &mut Vec<String>) -> Result<(), String> {
    let mut problem = None;
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(expr, |e| {
        match e {
            Expr::Identifier(ident) => {
                if !inputs.contains(&ident.value) {
                    inputs.push(ident.value.clone());
                }
            }
            Expr::Value(v) if number(&v.value).is_some() => {}
            Expr::Nested(_) => {}
            Expr::UnaryOp {
                op: UnaryOperator::Minus | UnaryOperator::Plus,
                ..
            } => {}
            Expr::BinaryOp {
                op:
                    BinaryOperator::Plus
                    | BinaryOperator::Minus
                    | BinaryOperator::Multiply
                    | BinaryOperator::Divide,
                ..
            } => {}
            other => {
                problem = Some(format!(
                    "`{other}`: a formula uses only input names, numbers, + - * / and parentheses"
                ));
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    problem.map_or(Ok(()), Err)
}

fn eval(expr: &Expr, values: &HashMap<String, f64>) -> Option<f64> {
    Some(match expr {
        Expr::Identifier(ident) => *values.get(&ident.value)?,
        Expr::Value(v) => number(&v.value)?,
        Expr::Nested(inner) => eval(inner, values)?,
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => -eval(expr, values)?,
        Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => eval(expr, values)?,
        Expr::BinaryOp { left, op, right } => {
            let (l, r) = (eval(left, values)?, eval(right, values)?);
            match op {
                BinaryOperator::Plus => l + r,
                BinaryOperator::Minus => l - r,
                BinaryOperator::Multiply => l * r,
                BinaryOperator::Divide => l / r,
                _ => return None,
            }
        }
        _ => return None,
    })
}

/// `Σ cᵢ·xᵢ + k`, if the expression is linear in its inputs.
fn linear(expr: &Expr) -> Option<(HashMap<String, f64>, f64)> {
    let scale = |(mut c, k): (HashMap<String, f64>, f64), s: f64| {
        c.values_mut().for_each(|v| *v *= s);
        (c, k * s)
    };
    match expr {
        Expr::Identifier(ident) => Some((HashMap::from([(ident.value.clone(), 1.0)]), 0.0)),
        Expr::Value(v) => Some((HashMap::new(), number(&v.value)?)),
        Expr::Nested(inner) => linear(inner),
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => Some(scale(linear(expr)?, -1.0)),
        Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => linear(expr),
        Expr::BinaryOp { left, op, right } => {
            let (l, r) = (linear(left)?, linear(right)?);
            match op {
                BinaryOperator::Plus | BinaryOperator::Minus => {
                    let sign = if *op == BinaryOperator::Plus {
                        1.0
                    } else {
                        -1.0
                    };
                    let (mut c, k) = l;
                    for (name, v) in r.0 {
                        *c.entry(name).or_default() += sign * v;
                    }
                    Some((c, k + sign * r.1))
                }
                BinaryOperator::Multiply if l.0.is_empty() => Some(scale(r, l.1)),
                BinaryOperator::Multiply if r.0.is_empty() => Some(scale(l, r.1)),
                BinaryOperator::Divide if r.0.is_empty() && r.1 != 0.0 => Some(scale(l, 1.0 / r.1)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// `k · Π xᵢ^eᵢ`, if the expression is a product or quotient of its inputs.
fn product(expr: &Expr) -> Option<(HashMap<String, f64>, f64)> {
    match expr {
        Expr::Identifier(ident) => Some((HashMap::from([(ident.value.clone(), 1.0)]), 1.0)),
        Expr::Value(v) => Some((HashMap::new(), number(&v.value)?)),
        Expr::Nested(inner) => product(inner),
        Expr::BinaryOp { left, op, right } => {
            let (l, r) = (product(left)?, product(right)?);
            let sign = match op {
                BinaryOperator::Multiply => 1.0,
                BinaryOperator::Divide => -1.0,
                _ => return None,
            };
            let (mut e, k) = l;
            for (name, v) in r.0 {
                *e.entry(name).or_default() += sign * v;
            }
            Some((e, if sign > 0.0 { k * r.1 } else { k / r.1 }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, f64)]) -> HashMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn assert_exact(d: &Decomposition) {
        let sum: f64 = d.parts.iter().map(|(_, p)| p).sum();
        let total = d.after - d.before;
        assert!(
            (sum - total).abs() <= 1e-9 * total.abs().max(1.0),
            "{d:?}: parts sum to {sum}, change is {total}"
        );
    }

    #[test]
    fn linear_formulas_split_by_difference() {
        let f = Formula::parse("signups + 2 * reactivations - churned").unwrap();
        let d = f
            .decompose(
                &values(&[
                    ("signups", 100.0),
                    ("reactivations", 10.0),
                    ("churned", 30.0),
                ]),
                &values(&[
                    ("signups", 120.0),
                    ("reactivations", 15.0),
                    ("churned", 40.0),
                ]),
            )
            .unwrap();
        assert_eq!(d.method, Method::Difference);
        assert_eq!(
            d.parts,
            vec![
                ("signups".into(), 20.0),
                ("reactivations".into(), 10.0),
                ("churned".into(), -10.0)
            ]
        );
        assert_exact(&d);
    }

    #[test]
    fn products_split_by_lmdi_exactly() {
        // nights = bookings × nights_per_booking: 100 × 3 = 300 → 110 × 3.3 = 363.
        let f = Formula::parse("bookings * nights_per_booking").unwrap();
        let d = f
            .decompose(
                &values(&[("bookings", 100.0), ("nights_per_booking", 3.0)]),
                &values(&[("bookings", 110.0), ("nights_per_booking", 3.3)]),
            )
            .unwrap();
        assert_eq!(d.method, Method::Lmdi);
        assert_exact(&d);
        // Both grew by 10%: with LMDI equal log growth gives equal parts.
        assert!((d.parts[0].1 - d.parts[1].1).abs() < 1e-9, "{d:?}");
        assert!((d.parts[0].1 - 31.5).abs() < 1e-9, "{d:?}");
    }

    #[test]
    fn three_factor_products_and_quotients_are_exact() {
        let f = Formula::parse("visits * conversion * basket / 100").unwrap();
        let d = f
            .decompose(
                &values(&[("visits", 1000.0), ("conversion", 0.05), ("basket", 40.0)]),
                &values(&[("visits", 1200.0), ("conversion", 0.045), ("basket", 42.0)]),
            )
            .unwrap();
        assert_eq!(d.method, Method::Lmdi);
        assert_exact(&d);
        assert!(d.parts[1].1 < 0.0, "conversion fell: {d:?}");
    }

    #[test]
    fn zeros_fall_back_to_shapley_which_is_exact_too() {
        let f = Formula::parse("a * b").unwrap();
        let d = f
            .decompose(
                &values(&[("a", 0.0), ("b", 5.0)]),
                &values(&[("a", 4.0), ("b", 6.0)]),
            )
            .unwrap();
        assert_eq!(d.method, Method::Shapley);
        assert_exact(&d);
        // Shapley for a·b: Δa·(b₀+b₁)/2 and Δb·(a₀+a₁)/2.
        assert_eq!(d.parts, vec![("a".into(), 22.0), ("b".into(), 2.0)]);
    }

    #[test]
    fn mixed_formulas_use_shapley() {
        let f = Formula::parse("(a + b) * c").unwrap();
        let before = values(&[("a", 1.0), ("b", 2.0), ("c", 3.0)]);
        let after = values(&[("a", 2.0), ("b", 4.0), ("c", 5.0)]);
        let d = f.decompose(&before, &after).unwrap();
        assert_eq!(d.method, Method::Shapley);
        assert_exact(&d);
    }

    #[test]
    fn only_arithmetic_is_accepted() {
        assert!(Formula::parse("sum(a)").is_err());
        assert!(Formula::parse("a > b").is_err());
        assert_eq!(
            Formula::parse("(a - b) / c").unwrap().inputs(),
            ["a", "b", "c"]
        );
    }
}
