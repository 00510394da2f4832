//! The merged layout of a group: block order, slots and the layout map.

use pleas_core::merge::layout::{GroupLayout, LayoutError, Slot};
use pleas_core::merge::sources::{RowSource, TargetRule, UnitLayout, row_source};

#[test]
fn blocks_follow_a_order_and_b_partners() {
    // A unit i matched to B unit perm[i]; merge A units 3 and 0.
    let perm = [2, 0, 3, 1];
    let l = GroupLayout::new(&perm, &[3, 0]).unwrap();
    assert_eq!(l.merged, vec![(0, 2), (3, 1)]);
    assert_eq!(l.a_only, vec![1, 2]);
    assert_eq!(l.b_only, vec![0, 3]);
    assert_eq!(
        (l.merged_count(), l.original_width(), l.merged_width()),
        (2, 4, 6)
    );
    assert_eq!(
        l.slots_a(),
        vec![
            Slot::Merged(0),
            Slot::Private(2),
            Slot::Private(3),
            Slot::Merged(1)
        ]
    );
    assert_eq!(
        l.slots_b(),
        vec![
            Slot::Private(4),
            Slot::Merged(1),
            Slot::Merged(0),
            Slot::Private(5)
        ]
    );
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
    assert!(full.a_only.is_empty() && full.b_only.is_empty());
    let none = GroupLayout::new(&perm, &[]).unwrap();
    assert_eq!(none.merged_width(), 6);
    assert_eq!(none.b_only, vec![1, 0, 2]);
    assert_eq!(
        none.slots_a().iter().map(|s| s.index()).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
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
    assert!(GroupLayout::new(&[], &[]).unwrap().merged.is_empty());
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
        assert_eq!(l.slot_a(i), l.slots_a()[i].index());
        assert_eq!(l.slot_b(i), l.slots_b()[i].index());
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
