//! What the evaluator keeps of the Kafka transactions that have not committed yet.
//!
//! The consume loop handles the next batch while the previous one commits, so two transactions
//! can be uncommitted at once: the open one, still taking messages, and the sealed one, whose
//! commit is in flight. Each keeps its own changes, so that the commit of one makes only its
//! own changes final; an abort forgets both (the loop replays both batches).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

/// One `T` per uncommitted transaction: the open one and the sealed ones, oldest first.
pub struct Generations<T> {
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    open: T,
    sealed: VecDeque<T>,
}

impl<T: Default> Default for Generations<T> {
    fn default() -> Self {
        Generations {
            inner: Mutex::new(Inner {
                open: T::default(),
                sealed: VecDeque::new(),
            }),
        }
    }
}

impl<T: Default> Generations<T> {
    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes the open transaction's `T`.
    pub fn with_open<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.lock().open)
    }

    /// The first answer of `f` looking at the newest transaction's `T` first, then the older
    /// ones: what a later change replaced is not seen.
    pub fn find_newest<R>(&self, mut f: impl FnMut(&T) -> Option<R>) -> Option<R> {
        let inner = self.lock();
        f(&inner.open).or_else(|| inner.sealed.iter().rev().find_map(f))
    }

    /// The open transaction was closed: what it holds waits for its commit; the next messages
    /// open a new one.
    pub fn seal(&self) {
        let mut inner = self.lock();
        let open = std::mem::take(&mut inner.open);
        inner.sealed.push_back(open);
    }

    /// The oldest sealed transaction committed: what it held, to be made final.
    pub fn take_committed(&self) -> T {
        self.lock().sealed.pop_front().unwrap_or_default()
    }

    /// Every uncommitted transaction was aborted: forget them all.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.open = T::default();
        inner.sealed.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_takes_only_the_sealed_transaction_and_reads_see_the_newest() {
        let g: Generations<Vec<u32>> = Generations::default();
        g.with_open(|v| v.push(1));
        g.seal();
        g.with_open(|v| v.push(2));
        let last = |g: &Generations<Vec<u32>>| g.find_newest(|v| v.last().copied());
        assert_eq!(last(&g), Some(2), "the open transaction first");
        assert_eq!(g.take_committed(), vec![1]);
        assert_eq!(g.take_committed(), Vec::<u32>::new(), "nothing else sealed");
        g.seal();
        g.with_open(|v| v.push(3));
        g.clear();
        assert_eq!(last(&g), None, "an abort forgets every generation");
        assert_eq!(g.take_committed(), Vec::<u32>::new());
    }

    #[test]
    fn a_read_falls_back_to_the_sealed_transaction() {
        let g: Generations<Vec<u32>> = Generations::default();
        g.with_open(|v| v.push(7));
        g.seal();
        assert_eq!(g.find_newest(|v| v.last().copied()), Some(7));
    }
}
