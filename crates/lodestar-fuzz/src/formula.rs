//! `formula`: a metric tree's `formula` (parsed by `decompose::Formula`), evaluated and
//! decomposed with input values taken from the fuzz input.

use std::collections::HashMap;

use lodestar_core::decompose::Formula;

use crate::bytes::text_then_bytes;

/// `data` is the formula's text, then optionally a NUL byte and one byte per input value
/// (before, after, in the formula's order of inputs; a quarter of the signed byte, so that
/// values are small and exact). A decomposition's parts must add up to the change.
pub fn formula(data: &[u8]) {
    let (text, mut bytes) = text_then_bytes(data);
    let Ok(formula) = Formula::parse(&text) else {
        return;
    };
    let mut before = HashMap::new();
    let mut after = HashMap::new();
    for (i, name) in formula.inputs().iter().enumerate() {
        let base = i as f64 + 1.0;
        let mut value = |default: f64| bytes.next().map_or(default, |b| f64::from(b as i8) / 4.0);
        before.insert(name.clone(), value(base));
        after.insert(name.clone(), value(base * 2.0));
    }
    let v0 = formula.eval(&before);
    let v1 = formula.eval(&after);
    let Some(d) = formula.decompose(&before, &after) else {
        return;
    };
    assert_eq!(
        Some(d.before),
        v0,
        "`{text}`: decomposition's `before` is not the value"
    );
    assert_eq!(
        Some(d.after),
        v1,
        "`{text}`: decomposition's `after` is not the value"
    );
    let names: Vec<&String> = d.parts.iter().map(|(n, _)| n).collect();
    let inputs: Vec<&String> = formula.inputs().iter().collect();
    assert_eq!(names, inputs, "`{text}`: one part per input, in order");
    if d.parts.iter().all(|(_, p)| p.is_finite()) {
        let sum: f64 = d.parts.iter().map(|(_, p)| p).sum();
        let scale: f64 =
            d.parts.iter().map(|(_, p)| p.abs()).sum::<f64>() + d.before.abs() + d.after.abs();
        let change = d.after - d.before;
        assert!(
            (sum - change).abs() <= 1e-9 * scale.max(1.0),
            "`{text}` ({:?}): parts {:?} add up to {sum}, the change is {change}",
            d.method,
            d.parts
        );
    }
}
