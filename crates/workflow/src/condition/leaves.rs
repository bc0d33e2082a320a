//! Leaves' verdicts remembered while several workflows judge one record.
//!
//! A tenant's workflows often share leaves ("StageName is Closed Won", "Amount at least 1,000"):
//! the same comparison on the same record gives the same verdict, so one evaluation serves all
//! of them. [`Leaves`] is where a caller keeps what it already knows; [`EachTime`] knows nothing.

use super::{Comparison, Mode, Verdict};

/// Verdicts of leaves already evaluated on the record being judged.
pub trait Leaves {
    /// `leaf`'s verdict in `mode`: remembered, else `evaluate`d (and perhaps remembered).
    fn verdict(
        &mut self,
        leaf: &Comparison,
        mode: Mode,
        evaluate: impl FnOnce() -> Verdict,
    ) -> Verdict;
}

/// Evaluates every leaf every time.
pub struct EachTime;

impl Leaves for EachTime {
    fn verdict(&mut self, _: &Comparison, _: Mode, evaluate: impl FnOnce() -> Verdict) -> Verdict {
        evaluate()
    }
}
