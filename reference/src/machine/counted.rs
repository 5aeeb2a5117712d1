//! A value that counts the times it was open to change, for the checker's skip of unchanged
//! state (`unchanged.rs`).
//!
//! Invariant kept here: every `&mut` access to the value goes through `DerefMut`, which bumps
//! `changes` (whether or not the caller then changes anything), so while `changes` stays the
//! same the value is the same. The value cannot be reached mutably any other way. Replacing a
//! whole `Counted` (an assignment) would carry another count: the machine never does that to
//! a value the skip has recorded (a forked mm's VMAs are assigned before the mm exists).

use std::ops::{Deref, DerefMut};

#[derive(Clone, Default, Debug)]
pub(crate) struct Counted<T> {
    value: T,
    changes: u64,
}

impl<T> Counted<T> {
    /// Mutable accesses so far.
    pub fn changes(&self) -> u64 {
        self.changes
    }
}

impl<T> Deref for Counted<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for Counted<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.changes += 1;
        &mut self.value
    }
}

impl<'a, T> IntoIterator for &'a Counted<T>
where
    &'a T: IntoIterator,
{
    type Item = <&'a T as IntoIterator>::Item;
    type IntoIter = <&'a T as IntoIterator>::IntoIter;
    fn into_iter(self) -> Self::IntoIter {
        (&self.value).into_iter()
    }
}

/// A mutable iteration counts as a change (through `DerefMut`).
impl<'a, T> IntoIterator for &'a mut Counted<T>
where
    &'a mut T: IntoIterator,
{
    type Item = <&'a mut T as IntoIterator>::Item;
    type IntoIter = <&'a mut T as IntoIterator>::IntoIter;
    fn into_iter(self) -> Self::IntoIter {
        self.deref_mut().into_iter()
    }
}
