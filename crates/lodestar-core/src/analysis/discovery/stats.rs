//! The pure statistics of discovery: from per-(activity, count, retained) user counts to
//! 2×2 tables, their statistics, ranked candidates and validation verdicts.

use std::collections::BTreeMap;

use super::{DateRange, Z_95};

/// The users of one cohort range.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cohort {
    pub range: DateRange,
    /// Users old enough to be judged.
    pub users: u64,
    /// Of those, the retained.
    pub retained: u64,
    /// Users onboarded in the range but too recently to be judged: left out.
    pub too_young: u64,
    /// The minimum support applied to this cohort.
    pub min_support: u64,
}

impl Cohort {
    pub fn retention(&self) -> Option<f64> {
        ratio(self.retained, self.users)
    }
}

/// The 2×2 table of one candidate: did the activity at least k times (or not) × retained
/// (or not), in users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TwoByTwo {
    pub doers_retained: u64,
    pub doers_churned: u64,
    pub others_retained: u64,
    pub others_churned: u64,
}

impl TwoByTwo {
    pub fn users(&self) -> u64 {
        self.doers() + self.others()
    }

    pub fn doers(&self) -> u64 {
        self.doers_retained + self.doers_churned
    }

    pub fn others(&self) -> u64 {
        self.others_retained + self.others_churned
    }

    pub fn retained(&self) -> u64 {
        self.doers_retained + self.others_retained
    }

    /// The doers' share of all users.
    pub fn support(&self) -> Option<f64> {
        ratio(self.doers(), self.users())
    }

    /// P(retained | did).
    pub fn retention_did(&self) -> Option<f64> {
        ratio(self.doers_retained, self.doers())
    }

    /// P(retained | did not).
    pub fn retention_not(&self) -> Option<f64> {
        ratio(self.others_retained, self.others())
    }

    /// P(retained | did) / P(retained | did not); undefined when no non-doer is retained.
    pub fn lift(&self) -> Option<f64> {
        let not = self.retention_not()?;
        (not > 0.0).then_some(self.retention_did()? / not)
    }

    /// P(retained | did): the share of the prediction "will stay" that comes true.
    pub fn precision(&self) -> Option<f64> {
        self.retention_did()
    }

    /// P(did | retained): the share of retained users the activity finds.
    pub fn recall(&self) -> Option<f64> {
        ratio(self.doers_retained, self.retained())
    }

    /// The phi coefficient (Pearson's correlation of the two yes/no variables); undefined
    /// when a row or column of the table is empty.
    pub fn phi(&self) -> Option<f64> {
        let [a, b, c, d] = [
            self.doers_retained,
            self.doers_churned,
            self.others_retained,
            self.others_churned,
        ]
        .map(|x| x as f64);
        let margins = (a + b) * (c + d) * (a + c) * (b + d);
        (margins > 0.0).then(|| ((a * d - b * c) / margins.sqrt()).clamp(-1.0, 1.0))
    }

    /// A confidence interval for phi by Fisher's z-transform: `tanh(atanh(phi) ± z/√(n−3))`.
    /// Approximate for a 2×2 table (phi is a correlation of two binary variables), good once
    /// both groups hold a few dozen users; `None` with fewer than 4 users.
    pub fn phi_interval(&self, z: f64) -> Option<(f64, f64)> {
        let phi = self.phi()?;
        let n = self.users();
        if n <= 3 {
            return None;
        }
        let centre = phi.atanh();
        let half = z / ((n - 3) as f64).sqrt();
        Some(((centre - half).tanh(), (centre + half).tanh()))
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// "Did `activity` at least `at_least` times within X of onboarding."
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub activity: String,
    pub at_least: u32,
    pub table: TwoByTwo,
    /// The same candidate on the validation cohort, when one was asked for.
    pub validation: Option<Validation>,
}

impl Candidate {
    pub fn phi_interval(&self) -> Option<(f64, f64)> {
        self.table.phi_interval(Z_95)
    }

    /// `save_listing ≥ 2`.
    pub fn label(&self) -> String {
        format!("{} ≥ {}", self.activity, self.at_least)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Validation {
    pub table: TwoByTwo,
    pub verdict: Verdict,
}

/// Whether a candidate holds on the validation cohort (see [`verdict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The same direction, and the 95% interval excludes no association.
    Holds,
    /// Holds, but the whole interval is weaker than the training estimate.
    Weaker,
    /// No association, or the opposite one, out of sample.
    Fails,
    /// Fewer than the minimum support in a group, or no variation: nothing to tell.
    TooFewUsers,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::Weaker => "weaker",
            Verdict::Fails => "fails",
            Verdict::TooFewUsers => "too few users",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Pure computation: from per-(activity, count, retained) user counts to ranked candidates.

/// User counts of one cohort, as the query returns them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Counts {
    pub users: u64,
    pub retained: u64,
    pub too_young: u64,
    /// activity → index `c` (1 ≤ c ≤ max_k; `max_k` means "max_k or more") → users by
    /// `[churned, retained]`.
    pub by_activity: BTreeMap<String, Vec<[u64; 2]>>,
}

impl Counts {
    pub(crate) fn add(
        &mut self,
        activity: &str,
        count: u32,
        retained: bool,
        users: u64,
        max_k: u32,
    ) {
        let row = self
            .by_activity
            .entry(activity.to_string())
            .or_insert_with(|| vec![[0, 0]; max_k as usize + 1]);
        let c = count.min(max_k) as usize;
        row[c][usize::from(retained)] += users;
    }

    /// The 2×2 table of "did `activity` at least `k` times".
    pub(crate) fn table(&self, activity: &str, k: u32) -> TwoByTwo {
        let (mut churned, mut retained) = (0, 0);
        if let Some(row) = self.by_activity.get(activity) {
            for cell in row.iter().skip(k as usize) {
                churned += cell[0];
                retained += cell[1];
            }
        }
        TwoByTwo {
            doers_retained: retained,
            doers_churned: churned,
            others_retained: self.retained.saturating_sub(retained),
            others_churned: (self.users - self.retained).saturating_sub(churned),
        }
    }
}

/// Every (activity, k) with at least one doer, split by minimum support and sorted by phi.
pub(crate) fn candidates(
    counts: &Counts,
    max_k: u32,
    min_support: u64,
) -> (Vec<Candidate>, Vec<Candidate>) {
    let mut ranked = Vec::new();
    let mut below = Vec::new();
    for activity in counts.by_activity.keys() {
        for k in 1..=max_k {
            let table = counts.table(activity, k);
            if table.doers() == 0 {
                break;
            }
            let candidate = Candidate {
                activity: activity.clone(),
                at_least: k,
                table,
                validation: None,
            };
            let supported = table.doers() >= min_support.max(1)
                && table.others() >= min_support.max(1)
                && table.phi().is_some();
            if supported {
                ranked.push(candidate);
            } else {
                below.push(candidate);
            }
        }
    }
    ranked.sort_by(rank_order);
    below.sort_by(rank_order);
    (ranked, below)
}

/// Phi descending (undefined last), then lift descending, then name and k.
fn rank_order(x: &Candidate, y: &Candidate) -> std::cmp::Ordering {
    let key = |c: &Candidate| c.table.phi().unwrap_or(f64::NEG_INFINITY);
    let lift = |c: &Candidate| c.table.lift().unwrap_or(f64::NEG_INFINITY);
    key(y)
        .total_cmp(&key(x))
        .then(lift(y).total_cmp(&lift(x)))
        .then_with(|| x.activity.cmp(&y.activity))
        .then(x.at_least.cmp(&y.at_least))
}

/// Whether a training association holds on the validation table.
///
/// - too few users: either group has fewer than `min_support` users, or phi is undefined;
/// - fails: the validation phi's 95% interval contains 0, or lies on the other side of it
///   (so the validation lift is ≤ 1 where the training lift was > 1, or the reverse);
/// - weaker: same side, but the whole interval is closer to 0 than the training phi;
/// - holds: otherwise (the interval contains the training phi, or lies beyond it).
pub fn verdict(training: &TwoByTwo, validation: &TwoByTwo, min_support: u64) -> Verdict {
    let min = min_support.max(1);
    let (Some(phi), Some((low, high))) = (training.phi(), validation.phi_interval(Z_95)) else {
        return Verdict::TooFewUsers;
    };
    if validation.doers() < min || validation.others() < min {
        return Verdict::TooFewUsers;
    }
    // Work on the training association's side of zero (a negative one mirrored).
    let (low, high, phi) = if phi >= 0.0 {
        (low, high, phi)
    } else {
        (-high, -low, -phi)
    };
    if low <= 0.0 {
        Verdict::Fails
    } else if high < phi {
        Verdict::Weaker
    } else {
        Verdict::Holds
    }
}

pub(super) fn cohort(range: DateRange, counts: &Counts, min_support: u64) -> Cohort {
    Cohort {
        range,
        users: counts.users,
        retained: counts.retained,
        too_young: counts.too_young,
        min_support,
    }
}

/// Counts of a hand-made cohort, for the tests here and in `text`.
#[cfg(test)]
pub(super) fn counts() -> Counts {
    // 10 users, 4 retained. Users who did "save": 1 time: 1 churned, 1 retained;
    // 2 times: 0 churned, 2 retained; 3+ times: 1 retained.
    let mut c = Counts {
        users: 10,
        retained: 4,
        ..Counts::default()
    };
    c.add("save", 1, false, 1, 3);
    c.add("save", 1, true, 1, 3);
    c.add("save", 2, true, 2, 3);
    c.add("save", 7, true, 1, 3);
    c.add("open", 1, false, 6, 3);
    c.add("open", 1, true, 4, 3);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(a: u64, b: u64, c: u64, d: u64) -> TwoByTwo {
        TwoByTwo {
            doers_retained: a,
            doers_churned: b,
            others_retained: c,
            others_churned: d,
        }
    }

    fn close(actual: Option<f64>, expected: f64) {
        let actual = actual.expect("a value");
        assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
    }

    #[test]
    fn statistics_of_a_hand_computed_table() {
        // 100 users: 30 did it (20 retained), 70 did not (14 retained).
        let t = table(20, 10, 14, 56);
        assert_eq!(
            (t.users(), t.doers(), t.others(), t.retained()),
            (100, 30, 70, 34)
        );
        close(t.support(), 0.3);
        close(t.retention_did(), 20.0 / 30.0);
        close(t.retention_not(), 0.2);
        // (2/3) / (1/5) = 10/3.
        close(t.lift(), 10.0 / 3.0);
        close(t.precision(), 20.0 / 30.0);
        close(t.recall(), 20.0 / 34.0);
        // (20·56 − 10·14) / √(30·70·34·66) = 980 / √4712400 = 980 / 2170.8063…
        close(t.phi(), 980.0 / 4_712_400f64.sqrt());
        close(t.phi(), 0.451_445_160_805);
    }

    #[test]
    fn the_phi_interval_is_fisher_z() {
        let t = table(20, 10, 14, 56);
        let phi: f64 = 0.451_445_160_805;
        // The half width on the z scale is 1.96/√97.
        let (low, high) = t.phi_interval(Z_95).unwrap();
        let z = 0.5 * ((1.0 + phi) / (1.0 - phi)).ln();
        let half = 1.959_963_984_540_054 / 97f64.sqrt();
        assert!((low - (z - half).tanh()).abs() < 1e-9);
        assert!((high - (z + half).tanh()).abs() < 1e-9);
        // Rounded: 0.280 to 0.595.
        assert_eq!(format!("{low:.3} {high:.3}"), "0.280 0.595");
        assert!(low < phi && phi < high);
    }

    #[test]
    fn a_negative_association_and_no_association() {
        // Doers are retained less: 5 of 50 against 25 of 50.
        let t = table(5, 45, 25, 25);
        close(t.lift(), 0.2);
        // (5·25 − 45·25) / √(50·50·30·70) = −1000 / √5250000.
        close(t.phi(), -1000.0 / 5_250_000f64.sqrt());
        // Same retention on both sides: lift 1, phi 0.
        let t = table(10, 30, 15, 45);
        close(t.lift(), 1.0);
        close(t.phi(), 0.0);
    }

    #[test]
    fn degenerate_tables_have_no_statistics() {
        // Everyone did it: no comparison group.
        let all = table(10, 5, 0, 0);
        assert_eq!(all.retention_not(), None);
        assert_eq!(all.lift(), None);
        assert_eq!(all.phi(), None);
        // No non-doer retained: lift is infinite, reported as undefined.
        let t = table(10, 5, 0, 20);
        assert_eq!(t.lift(), None);
        close(t.phi(), 200.0 / (15.0f64 * 20.0 * 10.0 * 25.0).sqrt());
        // A perfect association: phi 1 and an interval at 1.
        let perfect = table(10, 0, 0, 10);
        close(perfect.phi(), 1.0);
        assert_eq!(perfect.phi_interval(Z_95), Some((1.0, 1.0)));
        assert_eq!(table(1, 1, 0, 1).phi_interval(Z_95), None);
    }

    #[test]
    fn thresholds_are_cumulative_counts() {
        let c = counts();
        // ≥1: 5 doers (4 retained); others: 5 users, 0 retained.
        assert_eq!(c.table("save", 1), table(4, 1, 0, 5));
        // ≥2: 3 doers, all retained; others: 7 with 1 retained.
        assert_eq!(c.table("save", 2), table(3, 0, 1, 6));
        // ≥3 counts the capped "7 times".
        assert_eq!(c.table("save", 3), table(1, 0, 3, 6));
        assert_eq!(c.table("missing", 1), table(0, 0, 4, 6));
    }

    #[test]
    fn candidates_are_ranked_by_phi_above_the_support() {
        let c = counts();
        let (ranked, below) = candidates(&c, 3, 1);
        let labels: Vec<String> = ranked.iter().map(Candidate::label).collect();
        // save ≥ 1: phi = (4·5 − 0)/√(5·5·4·6) = 0.8165; save ≥ 2: 18/√(3·7·4·6) = 0.8018;
        // save ≥ 3: 6/√(1·9·4·6) = 0.4082. "open" was done by everyone: no comparison.
        assert_eq!(labels, ["save ≥ 1", "save ≥ 2", "save ≥ 3"]);
        assert_eq!(
            below.iter().map(Candidate::label).collect::<Vec<_>>(),
            ["open ≥ 1"]
        );
        // A support of 2 drops "save ≥ 3" (one doer).
        let (ranked, below) = candidates(&c, 3, 2);
        assert_eq!(ranked.len(), 2);
        assert_eq!(below.len(), 2);
    }

    #[test]
    fn validation_verdicts() {
        let training = table(200, 100, 140, 560); // phi ≈ 0.45
        // The same proportions, ten times fewer users: the interval contains 0.45.
        assert_eq!(
            verdict(&training, &table(20, 10, 14, 56), 5),
            Verdict::Holds
        );
        // Still positive but clearly smaller: phi ≈ 0.21, interval about 0.15 to 0.27.
        let smaller = table(150, 150, 200, 500);
        let (low, high) = smaller.phi_interval(Z_95).unwrap();
        assert!(low > 0.0 && high < 0.45, "{low} {high}");
        assert_eq!(verdict(&training, &smaller, 5), Verdict::Weaker);
        // No association (lift 1) or the reverse: fails.
        assert_eq!(
            verdict(&training, &table(100, 300, 100, 300), 5),
            Verdict::Fails
        );
        assert_eq!(verdict(&training, &table(5, 45, 25, 25), 5), Verdict::Fails);
        // Below the support in one group: cannot tell.
        assert_eq!(
            verdict(&training, &table(3, 1, 40, 60), 5),
            Verdict::TooFewUsers
        );
        // A negative training association holds when the validation one is negative too.
        let negative = table(10, 90, 50, 50);
        assert_eq!(
            verdict(&negative, &table(12, 88, 48, 52), 5),
            Verdict::Holds
        );
    }
}
