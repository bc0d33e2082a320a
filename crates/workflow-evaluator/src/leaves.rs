//! Leaves several of an integration's workflows share, evaluated once per record.
//!
//! Ten workflows of five leaves each evaluate fifty comparisons per event; the load script's
//! share fifteen distinct ones, and a tenant's workflows share theirs as often ("StageName is
//! Closed Won" in every sales workflow). A leaf's verdict depends only on the record, so the
//! first workflow to evaluate a shared leaf answers for the others.

use crm_sync_workflow::{Comparison, Leaves, Mode, Verdict};

/// The leaves that more than one place of an integration's workflows holds, each known by its
/// address in them (the workflows are immutable and outlive this) and grouped by equality.
#[derive(Debug, Default)]
pub struct SharedLeaves {
    class_of: foldhash::HashMap<usize, usize>,
    classes: usize,
}

fn address(leaf: &Comparison) -> usize {
    std::ptr::from_ref(leaf).addr()
}

impl SharedLeaves {
    pub fn new<'a>(leaves: impl IntoIterator<Item = &'a Comparison>) -> SharedLeaves {
        let mut distinct: Vec<(&Comparison, Vec<usize>)> = Vec::new();
        for leaf in leaves {
            match distinct.iter_mut().find(|(d, _)| *d == leaf) {
                Some((_, places)) => places.push(address(leaf)),
                None => distinct.push((leaf, vec![address(leaf)])),
            }
        }
        let shared = distinct.into_iter().filter(|(_, places)| places.len() > 1);
        let mut class_of = foldhash::HashMap::default();
        let mut classes = 0;
        for (class, (_, places)) in shared.enumerate() {
            class_of.extend(places.into_iter().map(|place| (place, class)));
            classes = class + 1;
        }
        SharedLeaves { class_of, classes }
    }

    /// What the workflows learn of the shared leaves while judging one record.
    pub fn for_one_record(&self) -> Memo<'_> {
        Memo {
            shared: self,
            known: vec![None; self.classes * 2],
        }
    }
}

/// Shared leaves' verdicts on one record, in either mode.
pub struct Memo<'s> {
    shared: &'s SharedLeaves,
    known: Vec<Option<Verdict>>,
}

impl Leaves for Memo<'_> {
    fn verdict(
        &mut self,
        leaf: &Comparison,
        mode: Mode,
        evaluate: impl FnOnce() -> Verdict,
    ) -> Verdict {
        let slot = self.shared.class_of.get(&address(leaf)).and_then(|class| {
            self.known
                .get_mut(class * 2 + usize::from(mode == Mode::State))
        });
        match slot {
            Some(known) => *known.get_or_insert_with(evaluate),
            None => evaluate(),
        }
    }
}

#[cfg(test)]
#[path = "leaves_tests.rs"]
mod tests;
