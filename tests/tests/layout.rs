//! The merged layout of a group: block order, slots and the layout map.

use pleas_core::merge::layout::{GroupLayout, LayoutError};
use pleas_core::merge::sources::{RowSource, TargetRule, UnitLayout, row_source};

#[test]
fn blocks_follow_a_order_and_b_partners() {
    // A unit i matched to B unit perm[i]; merge A units 3 and 0.
    let perm = [2, 0, 3, 1];
    let l = GroupLayout::new(&perm, &[3, 0]).unwrap();
    assert_eq!(l.pairs().collect::<Vec<_>>(), vec![(0, 2), (3, 1)]);
    assert_eq!(l.merged_a(), [0, 3]);
    assert_eq!(l.a_only_units(), [1, 2]);
    assert_eq!(l.b_only_units().collect::<Vec<_>>(), vec![0, 3]);
    assert_eq!(l.perm(), perm);
    assert_eq!(
        (l.merged_count(), l.original_width(), l.merged_width()),
        (2, 4, 6)
    );
    // Below k = 2: merged; A-only at 2..4, B-only at 4..6.
    assert_eq!(l.slots_a(), [0, 2, 3, 1]);
    assert_eq!(l.slots_b(), [4, 1, 0, 5]);
    let (ua, ub) = ([1.0f32, 2.0, 3.0, 4.0], [10.0f32, 20.0, 30.0, 40.0]);
    let mut out = [0.0f32; 6];
    l.apply(&ua, &ub, &mut out).unwrap();
    assert_eq!(
        out,
        [(1.0 + 30.0) / 2.0, (4.0 + 20.0) / 2.0, 2.0, 3.0, 10.0, 40.0]
    );
}

#[test]
fn full_merge_and_full_separation() {
    let perm = [1, 0, 2];
    let full = GroupLayout::new(&perm, &[0, 1, 2]).unwrap();
    assert_eq!(full.merged_width(), 3);
    assert!(full.a_only_units().is_empty() && full.b_only_units().len() == 0);
    let none = GroupLayout::new(&perm, &[]).unwrap();
    assert_eq!(none.merged_width(), 6);
    assert_eq!(none.b_only_units().collect::<Vec<_>>(), vec![1, 0, 2]);
    assert_eq!(none.slots_a(), [0, 1, 2]);
}

#[test]
fn bad_assignments_are_named() {
    assert_eq!(
        GroupLayout::new(&[0, 0], &[]),
        Err(LayoutError::NotAPermutation {
            position: 1,
            index: 0
        })
    );
    assert_eq!(
        GroupLayout::new(&[0, 5], &[]),
        Err(LayoutError::NotAPermutation {
            position: 1,
            index: 5
        })
    );
    assert_eq!(
        GroupLayout::new(&[0, 1], &[1, 1]),
        Err(LayoutError::BadMergedUnit { unit: 1 })
    );
    assert_eq!(
        GroupLayout::new(&[0, 1], &[2]),
        Err(LayoutError::BadMergedUnit { unit: 2 })
    );
    let l = GroupLayout::new(&[0, 1], &[0]).unwrap();
    let err = l.apply(&[1.0, 2.0], &[1.0], &mut [0.0; 3]).unwrap_err();
    assert_eq!(
        err,
        LayoutError::LengthMismatch {
            what: "B activations",
            expected: 2,
            found: 1
        }
    );
    assert_eq!(GroupLayout::new(&[], &[]).unwrap().pairs().len(), 0);
}

mod blocks {
    use pleas_core::merge::blocks::{InputSide, OutputBlock, output_blocks};
    use pleas_core::merge::layout::GroupLayout;

    #[test]
    fn conv_blocks_keep_cross_blocks_at_zero() {
        // Input group of width 3 with A unit 1 merged: layout [m | A0 A2 | B.. B..] = 5 channels.
        let input = GroupLayout::new(&[0, 1, 2], &[1]).unwrap();
        // Output group of width 2, nothing merged: [A0 A1 | B0 B1].
        let output = GroupLayout::new(&[1, 0], &[]).unwrap();
        let side = InputSide {
            layout: Some(&input),
            channels: 0,
            patch: 4,
            bias: true,
        };
        assert_eq!(side.columns(), 5 * 4 + 1);
        let blocks = output_blocks(side, Some(&output), 0);
        let m: Vec<usize> = (0..4).collect();
        let a: Vec<usize> = (4..12).collect();
        let b: Vec<usize> = (12..20).collect();
        let cat = |parts: &[&[usize]]| -> Vec<usize> {
            parts
                .iter()
                .flat_map(|p| p.iter().copied())
                .chain([20])
                .collect()
        };
        assert_eq!(
            blocks,
            vec![
                OutputBlock {
                    rows: 0..2,
                    cols: cat(&[&m, &a])
                },
                OutputBlock {
                    rows: 2..4,
                    cols: cat(&[&m, &b])
                },
            ]
        );
    }

    #[test]
    fn first_layer_and_shared_head() {
        let out = GroupLayout::new(&[0, 1], &[0]).unwrap(); // [m | A1 | B1]
        let image = InputSide {
            layout: None,
            channels: 3,
            patch: 9,
            bias: false,
        };
        let blocks = output_blocks(image, Some(&out), 0);
        assert_eq!(blocks.len(), 3);
        assert!(blocks.iter().all(|b| b.cols == (0..27).collect::<Vec<_>>()));
        let head_in = GroupLayout::new(&[1, 0], &[1]).unwrap();
        let side = InputSide {
            layout: Some(&head_in),
            channels: 0,
            patch: 1,
            bias: true,
        };
        let head = output_blocks(side, None, 10);
        assert_eq!(
            head,
            vec![OutputBlock {
                rows: 0..10,
                cols: vec![0, 1, 2, 3]
            }]
        );
        assert!(output_blocks(side, None, 0).is_empty());
    }
}

#[test]
fn unit_layout_view_and_row_sources_agree_with_the_lists() {
    // A units 1 and 3 merged with their partners 0 and 1; A-only 0 and 2, B-only 2 and 3:
    // [ (1, 0), (3, 1) | 0, 2 | 2, 3 ].
    let perm = [2, 0, 3, 1];
    let l = GroupLayout::new(&perm, &[1, 3]).unwrap();
    assert_eq!(UnitLayout::merged_width(&l), l.merged_width());
    for i in 0..4 {
        assert_eq!(l.slot_a(i), l.slots_a()[i]);
        assert_eq!(l.slot_b(i), l.slots_b()[i]);
    }
    let rows: Vec<RowSource> = (0..6)
        .map(|r| row_source(TargetRule::Layout(0), |_| &l, r))
        .collect();
    let pair = |a, b| RowSource {
        a: Some((a, 0.5)),
        b: Some((b, 0.5)),
    };
    assert_eq!(rows[0], pair(1, 0));
    assert_eq!(rows[1], pair(3, 1));
    assert_eq!(
        rows[2],
        RowSource {
            a: Some((0, 1.0)),
            b: None
        }
    );
    assert_eq!(
        rows[5],
        RowSource {
            a: None,
            b: Some((3, 1.0))
        }
    );
    // Every unit feeds the row at its slot, and only private rows are one model's alone.
    for i in 0..4 {
        assert_eq!(rows[l.slot_a(i)].a.map(|s| s.0), Some(i));
        assert_eq!(rows[l.slot_b(i)].b.map(|s| s.0), Some(i));
    }
    let private: Vec<bool> = rows.iter().map(RowSource::private).collect();
    assert_eq!(private, [false, false, true, true, true, true]);
    // Heads: the mean of both models' row, or one model's.
    assert_eq!(row_source(TargetRule::Average, |_| &l, 4), pair(4, 4));
    assert_eq!(
        row_source(TargetRule::OnlyB, |_| &l, 4),
        RowSource {
            a: None,
            b: Some((4, 1.0))
        }
    );
}

/// A random permutation of `0..n` (Fisher-Yates from `picks`), and the A units picked by
/// `merged`, in the shuffled order `picks` gives them.
fn perm_and_merged(n: usize, picks: &[usize], merged: &[bool]) -> (Vec<usize>, Vec<usize>) {
    let mut perm: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        perm.swap(i, picks[i] % (i + 1));
    }
    let merged_a = perm.iter().copied().filter(|&i| merged[i]).collect();
    (perm, merged_a)
}

/// Every answer a [`UnitLayout`] gives, for comparing two faces of one layout.
fn answers(l: &impl UnitLayout) -> Vec<usize> {
    let (n, k) = (l.original_width(), l.merged_count());
    let mut out = vec![n, k, l.merged_width()];
    for m in 0..k {
        let (a, b) = l.pair(m);
        out.extend([a, b]);
    }
    out.extend((0..n - k).flat_map(|s| [l.a_only(s), l.b_only(s)]));
    out.extend((0..n).flat_map(|i| [l.slot_a(i), l.slot_b(i)]));
    out
}

mod faces {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(pleas_tests::config(256))]

        /// The owned face and the caller-storage face of one layout answer alike, and the
        /// caller's storage holds exactly the owned lists.
        #[test]
        fn owned_and_caller_storage_faces_agree(
            n in 0usize..=24,
            picks in proptest::collection::vec(any::<usize>(), 24),
            merged in proptest::collection::vec(any::<bool>(), 24),
        ) {
            let (perm, merged_a) = perm_and_merged(n, &picks, &merged);
            let owned = GroupLayout::new(&perm, &merged_a).unwrap();
            let mut lists = vec![usize::MAX; GroupLayout::lists_len(n)];
            let borrowed = GroupLayout::fill(&perm, &merged_a, &mut lists).unwrap();
            prop_assert_eq!(answers(&owned), answers(&borrowed));
            prop_assert_eq!(owned.as_view(), borrowed);
            prop_assert_eq!(owned.pairs().collect::<Vec<_>>(), borrowed.pairs().collect::<Vec<_>>());
            prop_assert_eq!(owned.slots_b(), borrowed.slots_b());
            // Slots invert the lists: merged pairs share a slot below k, private ones do not.
            let k = owned.merged_count();
            for (m, (a, b)) in owned.pairs().enumerate() {
                prop_assert_eq!((owned.slot_a(a), owned.slot_b(b)), (m, m));
            }
            for (s, (&a, b)) in owned.a_only_units().iter().zip(owned.b_only_units()).enumerate() {
                prop_assert_eq!((owned.slot_a(a), owned.slot_b(b)), (k + s, n + s));
            }
        }

        /// Bad assignments and merged sets get the same error from both faces.
        #[test]
        fn both_faces_reject_alike(
            perm in proptest::collection::vec(0usize..8, 0..8),
            merged_a in proptest::collection::vec(0usize..9, 0..4),
        ) {
            let mut lists = vec![0; GroupLayout::lists_len(perm.len())];
            let owned = GroupLayout::new(&perm, &merged_a).map(|l| answers(&l));
            let borrowed = GroupLayout::fill(&perm, &merged_a, &mut lists).map(|l| answers(&l));
            prop_assert_eq!(owned, borrowed);
        }
    }
}

#[test]
fn caller_storage_of_the_wrong_length_is_named() {
    let mut short = [0usize; 7];
    assert_eq!(
        GroupLayout::fill(&[1, 0], &[0], &mut short),
        Err(LayoutError::LengthMismatch {
            what: "layout lists",
            expected: 8,
            found: 7
        })
    );
    let mut lists = [0usize; 8];
    let l = GroupLayout::fill(&[1, 0], &[1], &mut lists).unwrap();
    assert_eq!(l.pairs().collect::<Vec<_>>(), vec![(1, 0)]);
    // [perm | order (merged A 1, then A-only 0) | slot_a | slot_b].
    assert_eq!(lists, [1, 0, 1, 0, 1, 0, 0, 2]);
}
