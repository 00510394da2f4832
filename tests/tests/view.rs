//! Strided matrix views: bounds, aliasing, transposes and sub-views.

use pleas_core::linalg::{MatMut, MatRef, ViewError};

#[test]
fn views_that_do_not_fit_are_refused() {
    let data = [0.0f32; 12];
    assert!(MatRef::new(&data, 3, 4).is_ok());
    let err = MatRef::new(&data, 4, 4).unwrap_err();
    assert_eq!(
        err,
        ViewError {
            rows: 4,
            cols: 4,
            row_stride: 4,
            col_stride: 1,
            len: 12
        }
    );
    assert!(err.to_string().contains("4x4 view"));
    // The last element of a strided view must be inside the slice.
    assert!(MatRef::from_strided(&data, 2, 3, 6, 2).is_ok()); // last at 6 + 4 = 10
    assert!(MatRef::from_strided(&data, 2, 4, 6, 2).is_err()); // last at 6 + 6 = 12
    // Overflowing strides are an error, not a wrap-around.
    assert!(MatRef::from_strided(&data, 2, 2, usize::MAX, 1).is_err());
    // Empty views need no storage.
    assert!(MatRef::<f32>::new(&[], 0, 5).is_ok());
    assert!(MatRef::<f32>::from_strided(&[], 7, 0, 0, 0).is_ok());
}

#[test]
fn mutable_views_must_not_alias() {
    let mut data = [0.0f32; 16];
    assert!(MatMut::from_strided(&mut data, 2, 2, 2, 1).is_ok());
    assert!(MatMut::from_strided(&mut data, 2, 2, 1, 2).is_ok()); // column-major
    assert!(MatMut::from_strided(&mut data, 2, 3, 2, 1).is_err()); // rows overlap
    assert!(MatMut::from_strided(&mut data, 3, 2, 0, 1).is_err()); // all rows the same
    assert!(MatMut::from_strided(&mut data, 1, 3, 0, 1).is_ok()); // one row: row stride unused
    assert!(MatMut::from_strided(&mut data, 3, 1, 1, 0).is_ok()); // one column
    assert!(MatMut::from_strided(&mut data, 2, 2, 1, 1).is_err());
}

#[test]
fn transpose_and_submatrix_index_the_right_elements() {
    let data: Vec<f32> = (0..20).map(|v| v as f32).collect();
    let m = MatRef::new(&data, 4, 5).unwrap();
    assert_eq!(m.at(2, 3), 13.0);
    let t = m.transpose();
    assert_eq!(t.shape(), (5, 4));
    assert_eq!(t.at(3, 2), 13.0);
    let s = m.submatrix(1, 2, 2, 3).unwrap();
    assert_eq!((s.at(0, 0), s.at(1, 2)), (7.0, 14.0));
    assert!(m.submatrix(3, 0, 2, 1).is_none());
    assert!(m.submatrix(0, 5, 1, 1).is_none());
    assert_eq!(m.submatrix(4, 5, 0, 0).unwrap().shape(), (0, 0));
    assert_eq!(m.get(4, 0), None);
    assert_eq!(m.row(1).unwrap(), &[5.0, 6.0, 7.0, 8.0, 9.0]);
    assert!(t.row(0).is_none(), "a transposed row is not contiguous");

    let mut buf = data.clone();
    let mut mm = MatMut::new(&mut buf, 4, 5).unwrap();
    *mm.at_mut(3, 4) = -1.0;
    mm.row_mut(0).unwrap()[0] = -2.0;
    let mut tt = mm.transpose();
    *tt.at_mut(1, 0) = -3.0;
    assert_eq!((buf[19], buf[0], buf[1]), (-1.0, -2.0, -3.0));
}
