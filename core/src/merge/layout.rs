//! The merged layout of one permutation group: `[ merged (k) | A-only (n - k) | B-only (n - k) ]`.
//!
//! Given the assignment `perm` (A unit `i` matched to B unit `perm[i]`) and the A units whose
//! pairs are merged, the merged group has width `2n - k`. Each block lists units in increasing
//! order of the A index; the B-only block holds the B partners of the A-only units, in the
//! order of those A units. The layout map turns a pair of activations into merged ones:
//! `layout(u_A, u_B) = [ (u_A[M_A] + u_B[M_B]) / 2, u_A[S_A], u_B[S_B] ]`.
//!
//! One type, [`GroupLayout`], holds a layout whatever its storage: four lists of `n` indices
//! (the assignment, the order, the merged index of each A unit and of each B unit), owned
//! (`GroupLayout<Vec<usize>>`, the default, built by [`GroupLayout::new`] with `alloc`) or in
//! the caller's index scratch (`GroupLayout<&[usize]>`, filled by [`GroupLayout::fill`] from
//! [`GroupLayout::lists_len`] indices, no allocation: the device merge).

#[cfg(feature = "alloc")]
use alloc::vec;
#[cfg(feature = "alloc")]
use alloc::vec::Vec;
use core::fmt;

use super::sources::UnitLayout;

/// Why a layout could not be built or applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayoutError {
    /// `perm` is not a permutation of `0..n`: `index` repeats or is out of range.
    NotAPermutation {
        /// Position in `perm`.
        position: usize,
        /// The offending value.
        index: usize,
    },
    /// A merged A unit is out of range or listed twice.
    BadMergedUnit {
        /// The offending A unit.
        unit: usize,
    },
    /// More merged pairs than units.
    TooManyMerged {
        /// Merged pairs asked for.
        merged: usize,
        /// Units per model.
        units: usize,
    },
    /// A slice has the wrong length.
    LengthMismatch {
        /// What has the wrong length.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Found length.
        found: usize,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LayoutError::NotAPermutation { position, index } => write!(
                f,
                "the assignment is not a permutation: entry {position} is {index}"
            ),
            LayoutError::BadMergedUnit { unit } => {
                write!(f, "merged unit {unit} is out of range or listed twice")
            }
            LayoutError::TooManyMerged { merged, units } => {
                write!(f, "{merged} merged pairs in a group of {units} units")
            }
            LayoutError::LengthMismatch {
                what,
                expected,
                found,
            } => write!(f, "{what}: expected length {expected}, found {found}"),
        }
    }
}

impl core::error::Error for LayoutError {}

/// The layout of one group in the merged network, over its four lists of `n` indices
/// `[perm | order | slot_a | slot_b]`: `perm[i]` is the B unit matched to A unit `i`; `order`
/// the merged A units then the A-only units, each increasing; `slot_a[i]` and `slot_b[j]` the
/// merged indices of A unit `i` and B unit `j`. `S` holds the lists: `Vec<usize>` (owned, the
/// default) or `&[usize]` (the caller's index scratch).
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLayout<S = Vec<usize>> {
    /// Merged pairs `k`.
    merged: usize,
    /// `[perm | order | slot_a | slot_b]`, `4 n` indices.
    lists: S,
}

/// The layout of one group in the merged network, over its four lists of `n` indices
/// `[perm | order | slot_a | slot_b]`: `perm[i]` is the B unit matched to A unit `i`; `order`
/// the merged A units then the A-only units, each increasing; `slot_a[i]` and `slot_b[j]` the
/// merged indices of A unit `i` and B unit `j`. `S` holds the lists: `&[usize]` (the caller's
/// index scratch; with `alloc`, `Vec<usize>` too).
#[cfg(not(feature = "alloc"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLayout<S> {
    /// Merged pairs `k`.
    merged: usize,
    /// `[perm | order | slot_a | slot_b]`, `4 n` indices.
    lists: S,
}

#[cfg(feature = "alloc")]
impl GroupLayout {
    /// The layout for assignment `perm` with the pairs of the A units `merged_a` merged.
    pub fn new(perm: &[usize], merged_a: &[usize]) -> Result<Self, LayoutError> {
        let mut lists = vec![0; GroupLayout::lists_len(perm.len())];
        let merged = GroupLayout::fill(perm, merged_a, &mut lists)?.merged;
        Ok(GroupLayout { merged, lists })
    }
}

impl<'a> GroupLayout<&'a [usize]> {
    /// Indices a layout of a group of `n` units takes in the caller's storage (`4 n`;
    /// `usize::MAX` if that overflows).
    pub const fn lists_len(n: usize) -> usize {
        n.saturating_mul(4)
    }

    /// The layout for assignment `perm` with the pairs of the A units `merged_a` merged,
    /// written into `lists` ([`lists_len`](Self::lists_len)`(perm.len())` indices) and read
    /// from there. Same checks and errors as [`GroupLayout::new`]; no allocation.
    pub fn fill(
        perm: &[usize],
        merged_a: &[usize],
        lists: &'a mut [usize],
    ) -> Result<Self, LayoutError> {
        let n = perm.len();
        check_lists_len(n, lists.len())?;
        let (head, flags) = lists.split_at_mut(3 * n);
        head[..n].copy_from_slice(perm);
        let (perm, rest) = head.split_at_mut(n);
        let (_, seen) = rest.split_at_mut(n);
        check_perm(perm, seen)?;
        let k = mark_merged(merged_a.iter().copied(), flags)?;
        finish(k, lists);
        Ok(Self::view(k, lists))
    }

    /// Completes the layout of a group of `lists.len() / 4` units whose assignment is in
    /// `lists[..n]` and whose `k` merged A units are in `lists[n..n + k]` (as
    /// [`assign_pairs`](super::pairs::assign_pairs) leaves them), in place, and reads it.
    pub(crate) fn from_assignment(k: usize, lists: &'a mut [usize]) -> Result<Self, LayoutError> {
        let n = lists.len() / 4;
        check_lists_len(n, lists.len())?;
        if k > n {
            return Err(LayoutError::TooManyMerged {
                merged: k,
                units: n,
            });
        }
        let (head, flags) = lists.split_at_mut(3 * n);
        let (perm, rest) = head.split_at_mut(n);
        let (order, seen) = rest.split_at_mut(n);
        check_perm(perm, seen)?;
        mark_merged(order[..k].iter().copied(), flags)?;
        finish(k, lists);
        Ok(Self::view(k, lists))
    }

    /// The layout with `k` merged pairs held in `lists` (`4 n` indices written by
    /// [`fill`](Self::fill) or [`from_assignment`](Self::from_assignment)); not checked.
    pub(crate) fn view(k: usize, lists: &'a [usize]) -> Self {
        GroupLayout { merged: k, lists }
    }
}

/// `lists` must hold `4 n` indices.
fn check_lists_len(n: usize, found: usize) -> Result<(), LayoutError> {
    let expected = n.checked_mul(4).ok_or(LayoutError::LengthMismatch {
        what: "layout lists",
        expected: usize::MAX,
        found,
    })?;
    if found != expected {
        return Err(LayoutError::LengthMismatch {
            what: "layout lists",
            expected,
            found,
        });
    }
    Ok(())
}

/// Checks that `perm` is a permutation of `0..n`, with `seen` (`n` indices) as scratch.
fn check_perm(perm: &[usize], seen: &mut [usize]) -> Result<(), LayoutError> {
    seen.fill(usize::MAX);
    for (position, &index) in perm.iter().enumerate() {
        if index >= perm.len() || seen[index] != usize::MAX {
            return Err(LayoutError::NotAPermutation { position, index });
        }
        seen[index] = position;
    }
    Ok(())
}

/// Marks the merged A units in `flags` (1 merged, 0 not) and counts them.
fn mark_merged(
    merged_a: impl Iterator<Item = usize>,
    flags: &mut [usize],
) -> Result<usize, LayoutError> {
    flags.fill(0);
    let mut k = 0;
    for unit in merged_a {
        if unit >= flags.len() || flags[unit] != 0 {
            return Err(LayoutError::BadMergedUnit { unit });
        }
        flags[unit] = 1;
        k += 1;
    }
    Ok(k)
}

/// Writes the order and the slots of `lists` (`[perm | order | _ | flags]`, checked) for `k`
/// merged pairs: merged pairs at `0..k`, A-only units at `k..n`, their B partners at
/// `n..2n - k`.
fn finish(k: usize, lists: &mut [usize]) {
    let n = lists.len() / 4;
    let (perm, rest) = lists.split_at_mut(n);
    let (order, rest) = rest.split_at_mut(n);
    let (slot_a, slot_b) = rest.split_at_mut(n);
    let merged = (0..n).filter(|&i| slot_b[i] == 1);
    let separate = (0..n).filter(|&i| slot_b[i] == 0);
    for (o, i) in order.iter_mut().zip(merged.chain(separate)) {
        *o = i;
    }
    for (p, &a) in order.iter().enumerate() {
        slot_a[a] = p;
        slot_b[perm[a]] = if p < k { p } else { n + (p - k) };
    }
}

impl<S: AsRef<[usize]>> GroupLayout<S> {
    /// The four lists `[perm | order | slot_a | slot_b]`.
    fn list(&self, which: usize) -> &[usize] {
        let lists = self.lists.as_ref();
        let n = lists.len() / 4;
        &lists[which * n..(which + 1) * n]
    }

    /// The same layout read from borrowed lists.
    pub fn as_view(&self) -> GroupLayout<&[usize]> {
        GroupLayout::view(self.merged, self.lists.as_ref())
    }

    /// `perm[i]`: the B unit matched to A unit `i` by the assignment.
    pub fn perm(&self) -> &[usize] {
        self.list(0)
    }

    /// The A units whose pairs are merged, increasing (merged units `0..k`).
    pub fn merged_a(&self) -> &[usize] {
        &self.list(1)[..self.merged]
    }

    /// Merged pairs `(A unit, B unit)`, in increasing A order.
    pub fn pairs(&self) -> impl ExactSizeIterator<Item = (usize, usize)> + '_ {
        let perm = self.perm();
        self.merged_a().iter().map(move |&a| (a, perm[a]))
    }

    /// A-only units, increasing (merged units `k..n`).
    pub fn a_only_units(&self) -> &[usize] {
        &self.list(1)[self.merged..]
    }

    /// B-only units: the partners of [`a_only_units`](Self::a_only_units), in the same order
    /// (merged units `n..2n - k`).
    pub fn b_only_units(&self) -> impl ExactSizeIterator<Item = usize> + '_ {
        let perm = self.perm();
        self.a_only_units().iter().map(move |&a| perm[a])
    }

    /// Merged index of every A unit (indexed by A unit; below `k`: merged).
    pub fn slots_a(&self) -> &[usize] {
        self.list(2)
    }

    /// Merged index of every B unit (indexed by B unit; below `k`: merged).
    pub fn slots_b(&self) -> &[usize] {
        self.list(3)
    }

    /// Width of each original model's group.
    pub fn original_width(&self) -> usize {
        self.lists.as_ref().len() / 4
    }

    /// Width of the merged group, `2n - k`.
    pub fn merged_width(&self) -> usize {
        2 * self.original_width() - self.merged
    }

    /// Number of merged pairs `k`.
    pub fn merged_count(&self) -> usize {
        self.merged
    }

    /// Index of the first A-only unit in the merged layout.
    pub fn a_offset(&self) -> usize {
        self.merged
    }

    /// Index of the first B-only unit in the merged layout.
    pub fn b_offset(&self) -> usize {
        self.original_width()
    }

    /// `out = layout(u_a, u_b)`: averages of merged pairs, then A-only, then B-only values.
    pub fn apply(&self, u_a: &[f32], u_b: &[f32], out: &mut [f32]) -> Result<(), LayoutError> {
        let n = self.original_width();
        for (what, len, want) in [
            ("A activations", u_a.len(), n),
            ("B activations", u_b.len(), n),
            ("merged activations", out.len(), self.merged_width()),
        ] {
            if len != want {
                return Err(LayoutError::LengthMismatch {
                    what,
                    expected: want,
                    found: len,
                });
            }
        }
        for (o, (a, b)) in out.iter_mut().zip(self.pairs()) {
            *o = 0.5 * (u_a[a] + u_b[b]);
        }
        let (ao, bo) = (self.a_offset(), self.b_offset());
        for (s, &a) in self.a_only_units().iter().enumerate() {
            out[ao + s] = u_a[a];
        }
        for (s, b) in self.b_only_units().enumerate() {
            out[bo + s] = u_b[b];
        }
        Ok(())
    }
}

impl<S: AsRef<[usize]>> UnitLayout for GroupLayout<S> {
    fn original_width(&self) -> usize {
        GroupLayout::original_width(self)
    }
    fn merged_count(&self) -> usize {
        self.merged
    }
    fn pair(&self, m: usize) -> (usize, usize) {
        let a = self.list(1)[m];
        (a, self.perm()[a])
    }
    fn a_only(&self, s: usize) -> usize {
        self.list(1)[self.merged + s]
    }
    fn b_only(&self, s: usize) -> usize {
        self.perm()[self.a_only(s)]
    }
    fn slot_a(&self, i: usize) -> usize {
        self.list(2)[i]
    }
    fn slot_b(&self, j: usize) -> usize {
        self.list(3)[j]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completing_an_assignment_in_place_matches_fill() {
        let (perm, merged_a) = ([2, 0, 3, 1], [1, 3]);
        let mut filled = [0; 16];
        let expected = GroupLayout::fill(&perm, &merged_a, &mut filled).unwrap();
        // The assignment, then the merged A units then the rest, as assign_pairs leaves them.
        let mut lists = [usize::MAX; 16];
        lists[..4].copy_from_slice(&perm);
        lists[4..8].copy_from_slice(&[1, 3, 0, 2]);
        assert_eq!(GroupLayout::from_assignment(2, &mut lists), Ok(expected));
    }

    #[test]
    fn completing_a_bad_assignment_names_the_problem() {
        let mut lists = [0, 0, 0, 1, 0, 0, 0, 0];
        assert_eq!(
            GroupLayout::from_assignment(0, &mut lists),
            Err(LayoutError::NotAPermutation {
                position: 1,
                index: 0
            })
        );
        let mut lists = [1, 0, 1, 1, 0, 0, 0, 0];
        assert_eq!(
            GroupLayout::from_assignment(2, &mut lists),
            Err(LayoutError::BadMergedUnit { unit: 1 })
        );
        let mut lists = [1, 0, 1, 0, 0, 0, 0, 0];
        assert_eq!(
            GroupLayout::from_assignment(3, &mut lists),
            Err(LayoutError::TooManyMerged {
                merged: 3,
                units: 2
            })
        );
        let mut short = [0; 7];
        assert_eq!(
            GroupLayout::from_assignment(0, &mut short),
            Err(LayoutError::LengthMismatch {
                what: "layout lists",
                expected: 4,
                found: 7
            })
        );
    }
}
