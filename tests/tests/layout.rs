//! The merged layout of a group: block order, slots and the layout map.

use pleas_core::merge::layout::{GroupLayout, LayoutError, Slot};

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
