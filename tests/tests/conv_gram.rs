//! The lag-based patch Gram of a stride-1 convolution (`pleas_core::gram::conv`) against the
//! im2col route (im2row + the Gram accumulator), a scalar f64 twin from the definition and
//! nalgebra's f64 product of the im2row matrix; and its typed errors.

use nalgebra::DMatrix;
use pleas::par::OwnedGram;
use pleas_core::forward::im2col::{ConvGeometry, im2row, im2row_len};
use pleas_core::gram::conv::{ConvGram, ConvGramShape, TargetSlots};
use pleas_core::gram::{GramError, GramParams, Operand};
use pleas_core::linalg::{MatMut, MatRef};
use pleas_tests::matrices::uniform_values;
use pleas_tests::tolerance::GRAM_MOMENTS_REL;
use proptest::prelude::*;

type OwnedConvGram = ConvGram<Vec<f64>, Vec<f32>>;

/// Moments read from an accumulator (Gram lower triangle mirrored).
#[derive(Debug)]
struct Moments {
    gram: DMatrix<f64>,
    cross: DMatrix<f64>,
    sum_x: Vec<f64>,
    sum_t: Vec<f64>,
    sum_tt: Vec<f64>,
    cov: DMatrix<f64>,
    count: u64,
}

fn read(acc: &mut OwnedGram) -> Moments {
    let (d, t) = (acc.dim(), acc.targets());
    let mut g = vec![0.0; d * d];
    acc.write_gram(MatMut::new(&mut g, d, d).unwrap()).unwrap();
    let mut cv = vec![0.0; d * d];
    acc.write_covariance(MatMut::new(&mut cv, d, d).unwrap())
        .unwrap();
    let mut r = vec![0.0; d * t];
    acc.write_cross(MatMut::new(&mut r, d, t).unwrap()).unwrap();
    let (mut sx, mut st, mut stt) = (vec![0.0; d], vec![0.0; t], vec![0.0; t]);
    acc.write_sum_x(&mut sx).unwrap();
    acc.write_sum_t(&mut st).unwrap();
    acc.write_sum_tt(&mut stt).unwrap();
    let sym = |m: &[f64]| DMatrix::from_fn(d, d, |i, j| m[i.max(j) * d + i.min(j)]);
    Moments {
        gram: sym(&g),
        cov: sym(&cv),
        cross: DMatrix::from_row_slice(d, t, &r),
        sum_x: sx,
        sum_t: st,
        sum_tt: stt,
        count: acc.count(),
    }
}

/// One random problem: geometry, maps, targets and how the samples are pushed.
#[derive(Debug, Clone)]
struct Case {
    shape: ConvGramShape,
    samples: usize,
    maps: Vec<f32>,
    targets: Vec<f32>,
    /// Push boundaries (samples), ascending, from 0 to `samples`.
    cuts: Vec<usize>,
    block: usize,
    max_samples: usize,
}

impl Case {
    fn geometry(&self) -> ConvGeometry {
        let s = &self.shape;
        ConvGeometry::new(s.channels, s.height, s.width, s.kernel, [1, 1], s.padding).unwrap()
    }

    /// The im2row matrix (rows `samples * positions`, `dim` columns with the bias column).
    fn rows(&self) -> Vec<f32> {
        let geom = self.geometry();
        let d = self.shape.dim();
        let mut rows = vec![0.0; im2row_len(&geom, self.samples, d)];
        im2row(&geom, &self.maps, self.samples, d, &mut rows);
        if self.shape.bias {
            for r in rows.chunks_exact_mut(d) {
                r[d - 1] = 1.0;
            }
        }
        rows
    }

    fn params(&self) -> GramParams {
        GramParams::with_block_samples(self.block)
    }

    fn t_view(&self, from: usize, to: usize) -> Option<MatRef<'_, f32>> {
        let (p, t) = (self.shape.positions(), self.shape.targets);
        (t > 0).then(|| {
            MatRef::new(&self.targets[from * p * t..to * p * t], (to - from) * p, t).unwrap()
        })
    }

    /// The lag-based moments, read through a Gram accumulator.
    fn lag_moments(&self) -> Moments {
        let cg = OwnedConvGram::new_owned(self.shape, self.params(), self.max_samples).unwrap();
        self.lag_moments_with(cg)
    }

    /// The lag-based moments from `cg` (empty), read through a Gram accumulator.
    fn lag_moments_with(&self, mut cg: OwnedConvGram) -> Moments {
        let per = self.shape.input_len();
        for w in self.cuts.windows(2) {
            cg.push(
                &self.maps[w[0] * per..w[1] * per],
                w[1] - w[0],
                self.t_view(w[0], w[1]),
            )
            .unwrap();
        }
        assert_eq!(cg.count(), (self.samples * self.shape.positions()) as u64);
        let mut acc = OwnedGram::new_owned(self.shape.dim(), self.shape.targets, self.params());
        cg.add_to(&mut acc).unwrap();
        read(&mut acc)
    }

    /// The lag-based moments with the targets written into their slots ([`ConvGram::push_with`]),
    /// every push cut into batches of at most `max_samples` maps.
    fn slot_moments(&self) -> Moments {
        let mut cg = OwnedConvGram::new_owned(self.shape, self.params(), self.max_samples).unwrap();
        let per = self.shape.input_len();
        for w in self.cuts.windows(2) {
            for start in (w[0]..w[1]).step_by(self.max_samples) {
                let n = (w[1] - start).min(self.max_samples);
                let maps = &self.maps[start * per..(start + n) * per];
                cg.push_with(maps, n, |slots| self.write_slots(start, slots))
                    .unwrap();
            }
        }
        let mut acc = OwnedGram::new_owned(self.shape.dim(), self.shape.targets, self.params());
        cg.add_to(&mut acc).unwrap();
        read(&mut acc)
    }

    /// Writes the targets of the samples from `start` on into `slots`.
    fn write_slots(&self, start: usize, slots: &mut TargetSlots<'_>) {
        let (ow, t) = (self.shape.out_w(), self.shape.targets);
        for i in 0..slots.samples() {
            for oy in 0..self.shape.out_h() {
                let row = ((start + i) * self.shape.out_h() + oy) * ow;
                slots
                    .positions(i, oy)
                    .copy_from_slice(&self.targets[row * t..(row + ow) * t]);
            }
        }
    }

    /// The im2col route: im2row rows pushed into a Gram accumulator.
    fn im2col_moments(&self) -> Moments {
        let (d, t) = (self.shape.dim(), self.shape.targets);
        let rows = self.rows();
        let n = self.samples * self.shape.positions();
        let mut acc = OwnedGram::new_owned(d, t, self.params());
        acc.push(
            MatRef::new(&rows, n, d).unwrap(),
            self.t_view(0, self.samples),
        )
        .unwrap();
        read(&mut acc)
    }

    /// The im2row matrix in f64 and the targets.
    fn f64_matrices(&self) -> (X, DMatrix<f64>) {
        let (d, t) = (self.shape.dim(), self.shape.targets);
        let n = self.samples * self.shape.positions();
        let x = DMatrix::from_row_slice(n, d, &self.rows()).map(f64::from);
        let tm = DMatrix::from_row_slice(n, t, &self.targets).map(f64::from);
        let plane = self.shape.height * self.shape.width;
        let kk = self.shape.kernel[0] * self.shape.kernel[1];
        let shift_bound = (0..d)
            .map(|a| {
                if a == self.shape.patch_len() {
                    return 1.0;
                }
                let c = a / kk;
                (0..self.samples)
                    .flat_map(|s| &self.maps[(s * self.shape.channels + c) * plane..][..plane])
                    .fold(0.0f64, |m, &v| m.max(f64::from(v).abs()))
            })
            .collect();
        (
            X {
                rows: x,
                shift_bound,
            },
            tm,
        )
    }
}

/// An im2row matrix in f64 with a bound of each column's shift (its channel's largest
/// magnitude; 1 for the bias column).
struct X {
    rows: DMatrix<f64>,
    shift_bound: Vec<f64>,
}

/// Scalar f64 twin: the patch Gram from its definition, sum over samples and output
/// positions of products of (zero-padded) input values, and the cross moments likewise.
fn twin(case: &Case) -> (DMatrix<f64>, DMatrix<f64>) {
    let s = &case.shape;
    let [kh, kw] = s.kernel;
    let (kk, d, t) = (kh * kw, s.dim(), s.targets);
    let (oh, ow) = (s.out_h(), s.out_w());
    let value = |n: usize, col: usize, oy: usize, ox: usize| -> f64 {
        if col == s.patch_len() {
            return 1.0;
        }
        let (c, k) = (col / kk, col % kk);
        let iy = (oy + k / kw) as isize - s.padding[0] as isize;
        let ix = (ox + k % kw) as isize - s.padding[1] as isize;
        if iy < 0 || ix < 0 || iy as usize >= s.height || ix as usize >= s.width {
            return 0.0;
        }
        f64::from(
            case.maps[((n * s.channels + c) * s.height + iy as usize) * s.width + ix as usize],
        )
    };
    let mut g = DMatrix::zeros(d, d);
    let mut r = DMatrix::zeros(d, t);
    for n in 0..case.samples {
        for oy in 0..oh {
            for ox in 0..ow {
                let row = (n * oh + oy) * ow + ox;
                for a in 0..d {
                    let va = value(n, a, oy, ox);
                    for b in 0..d {
                        g[(a, b)] += va * value(n, b, oy, ox);
                    }
                    for j in 0..t {
                        r[(a, j)] += va * f64::from(case.targets[row * t + j]);
                    }
                }
            }
        }
    }
    (g, r)
}

fn assert_close(got: f64, want: f64, scale: f64, rel: f64, what: &str) {
    assert!(
        (got - want).abs() <= rel * scale.max(f64::MIN_POSITIVE),
        "{what}: {got} vs {want} (scale {scale})"
    );
}

/// `|M|` plus a bound of each column's shift (`shift_bound`): an upper bound of the centred
/// values `|m - shift|` that both routes multiply in f32 (the im2col route's shift is a mean of
/// the column, the lag route's a mean of the column's channel over the map).
fn centred_bound(m: &DMatrix<f64>, shift_bound: &[f64]) -> DMatrix<f64> {
    DMatrix::from_fn(m.nrows(), m.ncols(), |i, j| {
        m[(i, j)].abs() + shift_bound[j]
    })
}

/// The largest magnitude of each column.
fn column_max(m: &DMatrix<f64>) -> Vec<f64> {
    m.column_iter().map(|c| c.amax()).collect()
}

/// Moments against f64 ones, each entry relative to the sum of its centred terms' bounds:
/// the f32 block products round at that scale (`GRAM_MOMENTS_REL`), and the move back to
/// uncentred moments in f64 adds nothing measurable. (An entry whose exact value is 0, as for
/// two taps never inside the map together, still carries that rounding.)
fn check(m: &Moments, x: &X, t: &DMatrix<f64>, g: &DMatrix<f64>, r: &DMatrix<f64>, rel: f64) {
    let (xa, ta) = (
        centred_bound(&x.rows, &x.shift_bound),
        centred_bound(t, &column_max(t)),
    );
    let x = &x.rows;
    let (gs, rs) = (xa.transpose() * &xa, xa.transpose() * &ta);
    assert_eq!(m.count, x.nrows() as u64);
    for i in 0..x.ncols() {
        for j in 0..x.ncols() {
            assert_close(m.gram[(i, j)], g[(i, j)], gs[(i, j)], rel, "gram");
        }
        for j in 0..t.ncols() {
            assert_close(m.cross[(i, j)], r[(i, j)], rs[(i, j)], rel, "cross");
        }
        let col = x.column(i);
        assert_close(m.sum_x[i], col.sum(), xa.column(i).sum(), rel, "sum x");
    }
    for j in 0..t.ncols() {
        let col = t.column(j);
        assert_close(m.sum_t[j], col.sum(), ta.column(j).sum(), rel, "sum t");
        let sq = col.norm_squared();
        assert_close(m.sum_tt[j], sq, ta.column(j).norm_squared(), rel, "sum t^2");
    }
    // The covariance comes from the centred sums: relative to the centred scale, with a
    // floor of 1e-2 of the bound scale. The lag route centres each column on its channel's
    // mean, not on the column's own, so a column's covariance cancels the spread of its
    // channel over the map: with a single patch row (a kernel as large as the map) that is the
    // whole value, one f32 rounding (~1e-7) of the bound scale.
    let n = x.nrows() as f64;
    let xc = DMatrix::from_fn(x.nrows(), x.ncols(), |i, j| x[(i, j)] - x.column(j).mean());
    let want = xc.transpose() * &xc / n;
    let scale = xc.abs().transpose() * xc.abs() / n;
    for i in 0..x.ncols() {
        for j in 0..=i {
            let floor = gs[(i, j)] / n * 1e-2;
            assert_close(
                m.cov[(i, j)],
                want[(i, j)],
                scale[(i, j)].max(floor),
                rel,
                "covariance",
            );
        }
    }
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        (1usize..6, 1usize..9, 1usize..9),
        prop_oneof![Just(1usize), Just(3), Just(5), 1usize..4],
        prop_oneof![Just(1usize), Just(3), Just(5), 1usize..4],
        (0usize..3, 0usize..3),
        (0usize..4, any::<bool>(), 1usize..6),
        (prop_oneof![Just(1usize), 2usize..50, Just(4096)], 1usize..5),
        (
            proptest::collection::vec(0usize..6, 0..3),
            -3.0f32..3.0,
            any::<u64>(),
        ),
    )
        .prop_filter_map(
            "kernel must fit the padded map",
            |(
                (c, h, w),
                kh,
                kw,
                (ph, pw),
                (t, bias, samples),
                (block, max_samples),
                (cuts, offset, seed),
            )| {
                let shape = ConvGramShape {
                    channels: c,
                    height: h,
                    width: w,
                    kernel: [kh, kw],
                    padding: [ph, pw],
                    targets: t,
                    bias,
                };
                if shape.positions() == 0 {
                    return None;
                }
                let maps = uniform_values(samples * shape.input_len(), seed)
                    .into_iter()
                    .map(|v| v + offset)
                    .collect();
                let targets = uniform_values(samples * shape.positions() * t, seed ^ 7)
                    .into_iter()
                    .map(|v| v - offset)
                    .collect();
                let mut cuts: Vec<usize> = cuts.into_iter().map(|v| v % (samples + 1)).collect();
                cuts.extend([0, samples]);
                cuts.sort_unstable();
                Some(Case {
                    shape,
                    samples,
                    maps,
                    targets,
                    cuts,
                    block,
                    max_samples,
                })
            },
        )
}

proptest! {
    #![proptest_config(pleas_tests::config(64))]

    /// Random geometries (1x1 maps, maps smaller than the kernel, paddings 0-2, kernels up to
    /// 5x5, rectangular ones), block lengths, sub-batches and several pushes: the lag-based
    /// moments equal the scalar f64 twin, nalgebra's f64 im2row product and the im2col
    /// accumulator within the Gram tolerance.
    #[test]
    fn lag_moments_match_the_im2col_moments(case in case_strategy()) {
        let lag = case.lag_moments();
        let (x, t) = case.f64_matrices();
        let (g, r) = (x.rows.transpose() * &x.rows, x.rows.transpose() * &t);
        check(&lag, &x, &t, &g, &r, GRAM_MOMENTS_REL);
        let (gt, rt) = twin(&case);
        check(&lag, &x, &t, &gt, &rt, GRAM_MOMENTS_REL);
        // The im2col route: both within the tolerance of the exact moments, so within twice
        // it of each other.
        let old = case.im2col_moments();
        check(&old, &x, &t, &g, &r, GRAM_MOMENTS_REL);
        check(&lag, &x, &t, &old.gram, &old.cross, 2.0 * GRAM_MOMENTS_REL);
    }

    /// An accumulator reset after other maps (other shifts, other totals, perhaps another
    /// batch layout) gives bit for bit the moments of a new one: the merge reuses one per
    /// thread from shard to shard.
    #[test]
    fn a_reset_accumulator_equals_a_new_one(case in case_strategy()) {
        let fresh = case.lag_moments();
        let mut cg = OwnedConvGram::new_owned(case.shape, case.params(), case.max_samples).unwrap();
        let other: Vec<f32> = case.maps.iter().map(|v| 2.0 * v + 3.0).collect();
        cg.push(&other, case.samples, case.t_view(0, case.samples)).unwrap();
        cg.reset();
        prop_assert_eq!(cg.count(), 0);
        let reused = case.lag_moments_with(cg);
        let bits = |m: &Moments| -> Vec<u64> {
            m.gram.iter().chain(m.cross.iter()).chain(&m.sum_x).chain(&m.sum_t).chain(&m.sum_tt)
                .map(|v| v.to_bits()).collect()
        };
        prop_assert_eq!(fresh.count, reused.count);
        prop_assert!(bits(&fresh) == bits(&reused), "reset accumulator differs from a new one");
    }

    /// Targets written straight into the slots give bit for bit the moments of the same
    /// targets pushed as rows.
    #[test]
    fn targets_written_into_slots_give_the_moments_of_target_rows(case in case_strategy()) {
        let rows = case.lag_moments();
        let slots = case.slot_moments();
        let bits = |m: &Moments| -> Vec<u64> {
            m.gram.iter().chain(m.cross.iter()).chain(&m.sum_x).chain(&m.sum_t).chain(&m.sum_tt)
                .map(|v| v.to_bits()).collect()
        };
        prop_assert_eq!(rows.count, slots.count);
        prop_assert!(bits(&rows) == bits(&slots), "slot targets differ from target rows");
    }

    /// Two accumulators of the same maps, one pushed with im2row rows and then given the
    /// lag-based totals of other maps, combine like one over all rows: the totals are moved
    /// to an accumulator's existing shift in f64.
    #[test]
    fn lag_totals_add_to_an_accumulator_with_another_shift(case in case_strategy()) {
        let (d, nt) = (case.shape.dim(), case.shape.targets);
        let rows = case.rows();
        let n = case.samples * case.shape.positions();
        let mut acc = OwnedGram::new_owned(d, nt, case.params());
        acc.push(MatRef::new(&rows, n, d).unwrap(), case.t_view(0, case.samples)).unwrap();
        // Second copy of the samples, shifted by 2.
        let mut moved = case.clone();
        moved.maps.iter_mut().for_each(|v| *v += 2.0);
        let mut cg = OwnedConvGram::new_owned(moved.shape, moved.params(), moved.max_samples).unwrap();
        cg.push(&moved.maps, moved.samples, moved.t_view(0, moved.samples)).unwrap();
        cg.add_to(&mut acc).unwrap();
        let m = read(&mut acc);
        let (x1, t1) = case.f64_matrices();
        let (x2, _) = moved.f64_matrices();
        let rows = DMatrix::from_fn(2 * n, d, |i, j| if i < n { x1.rows[(i, j)] } else { x2.rows[(i - n, j)] });
        let t = DMatrix::from_fn(2 * n, nt, |i, j| t1[(i % n, j)]);
        let (g, r) = (rows.transpose() * &rows, rows.transpose() * &t);
        let shift_bound = x1.shift_bound.iter().zip(&x2.shift_bound).map(|(a, b)| a.max(*b)).collect();
        check(&m, &X { rows, shift_bound }, &t, &g, &r, GRAM_MOMENTS_REL);
    }
}

fn small_shape() -> ConvGramShape {
    ConvGramShape {
        channels: 2,
        height: 4,
        width: 5,
        kernel: [3, 3],
        padding: [1, 1],
        targets: 3,
        bias: true,
    }
}

#[test]
fn buffers_of_the_wrong_length_are_rejected() {
    let shape = small_shape();
    let params = GramParams::default();
    let slen = OwnedConvGram::storage_len(&shape);
    let wlen = OwnedConvGram::workspace_len(&shape, 4, params);
    let short_storage = ConvGram::new(shape, params, 4, vec![0.0; slen - 1], vec![0.0f32; wlen]);
    assert_eq!(
        short_storage.unwrap_err(),
        GramError::ShapeMismatch {
            what: "storage length",
            expected: slen,
            found: slen - 1
        }
    );
    let short_work = ConvGram::new(shape, params, 4, vec![0.0; slen], vec![0.0f32; wlen - 1]);
    assert_eq!(
        short_work.unwrap_err(),
        GramError::ShapeMismatch {
            what: "workspace length",
            expected: wlen,
            found: wlen - 1
        }
    );
    assert!(ConvGram::new(shape, params, 4, vec![0.0; slen], vec![0.0f32; wlen]).is_ok());
}

#[test]
fn shapes_that_do_not_fit_are_rejected() {
    let params = GramParams::default();
    let too_big = ConvGramShape {
        kernel: [7, 3],
        padding: [0, 1],
        ..small_shape()
    };
    assert!(matches!(
        OwnedConvGram::new_owned(too_big, params, 2),
        Err(GramError::ShapeMismatch {
            what: "output positions (the kernel must fit the padded map)",
            ..
        })
    ));
    let empty = ConvGramShape {
        kernel: [0, 3],
        ..small_shape()
    };
    assert!(matches!(
        OwnedConvGram::new_owned(empty, params, 2),
        Err(GramError::ShapeMismatch { .. })
    ));

    let shape = small_shape();
    let mut cg = OwnedConvGram::new_owned(shape, params, 2).unwrap();
    let maps = vec![0.5f32; 3 * shape.input_len()];
    let t = vec![0.0f32; 3 * shape.positions() * 3];
    let tv = MatRef::new(&t, 3 * shape.positions(), 3).unwrap();
    assert_eq!(
        cg.push(&maps[1..], 3, Some(tv)).unwrap_err(),
        GramError::ShapeMismatch {
            what: "length of the input maps (samples x C x H x W)",
            expected: 3 * shape.input_len(),
            found: 3 * shape.input_len() - 1,
        }
    );
    let short_t = MatRef::new(&t, 3 * shape.positions() - 1, 3).unwrap();
    assert!(matches!(
        cg.push(&maps, 3, Some(short_t)).unwrap_err(),
        GramError::ShapeMismatch {
            what: "rows of T (samples x output positions)",
            ..
        }
    ));
    assert!(matches!(
        cg.push(&maps, 3, None).unwrap_err(),
        GramError::ShapeMismatch { .. }
    ));
    assert_eq!(cg.count(), 0);
    // An accumulator of another width.
    let mut acc = OwnedGram::new_owned(shape.dim() - 1, 3, params);
    assert!(matches!(
        cg.add_to(&mut acc).unwrap_err(),
        GramError::ShapeMismatch { .. }
    ));
    assert_eq!(
        cg.set_shift(&[0.0], &[0.0; 3]).unwrap_err(),
        GramError::ShapeMismatch {
            what: "channel shift length",
            expected: 2,
            found: 1,
        }
    );
    cg.push(&maps, 3, Some(tv)).unwrap();
    assert_eq!(
        cg.set_shift(&[0.0; 2], &[0.0; 3]).unwrap_err(),
        GramError::ShiftAfterData
    );
}

/// A bad value is reported where the im2col route reports it: the same im2row row and
/// column, sample counts continuing over pushes; nothing of the failed push is counted.
#[test]
fn bad_values_are_rejected_as_the_im2col_route_rejects_them() {
    let shape = small_shape();
    let geom = ConvGeometry::new(2, 4, 5, [3, 3], [1, 1], [1, 1]).unwrap();
    let params = GramParams::default();
    let d = shape.dim();
    let rows_of = |maps: &[f32], n: usize| {
        let mut rows = vec![0.0; im2row_len(&geom, n, d)];
        im2row(&geom, maps, n, d, &mut rows);
        rows
    };
    for (at, bad) in [
        (0usize, f32::NAN),
        (17, f32::INFINITY),
        (2 * 20 + 39, -f32::INFINITY),
        (59, 1e30),
    ] {
        let mut maps = uniform_values(3 * shape.input_len(), 5);
        maps[at] = bad;
        let t = uniform_values(3 * shape.positions() * 3, 6);
        let tv = MatRef::new(&t, 3 * shape.positions(), 3).unwrap();
        let good = uniform_values(shape.input_len(), 9);
        let good_t = uniform_values(shape.positions() * 3, 10);
        let good_tv = MatRef::new(&good_t, shape.positions(), 3).unwrap();

        let mut cg = OwnedConvGram::new_owned(shape, params, 2).unwrap();
        cg.push(&good, 1, Some(good_tv)).unwrap();
        let lag = cg.push(&maps, 3, Some(tv)).unwrap_err();
        assert_eq!(cg.count(), shape.positions() as u64);

        let mut acc = OwnedGram::new_owned(d, 3, params);
        let good_rows = rows_of(&good, 1);
        acc.push(
            MatRef::new(&good_rows, shape.positions(), d).unwrap(),
            Some(good_tv),
        )
        .unwrap();
        let rows = rows_of(&maps, 3);
        let old = acc
            .push(
                MatRef::new(&rows, 3 * shape.positions(), d).unwrap(),
                Some(tv),
            )
            .unwrap_err();
        assert_eq!(lag, old, "input value {bad} at {at}");
    }
    // Targets.
    let maps = uniform_values(2 * shape.input_len(), 5);
    let mut t = uniform_values(2 * shape.positions() * 3, 6);
    t[31] = f32::NAN;
    let tv = MatRef::new(&t, 2 * shape.positions(), 3).unwrap();
    let mut cg = OwnedConvGram::new_owned(shape, params, 2).unwrap();
    assert_eq!(
        cg.push(&maps, 2, Some(tv)).unwrap_err(),
        GramError::NonFinite {
            operand: Operand::Targets,
            sample: 10,
            column: 1
        }
    );
    assert_eq!(cg.count(), 0);
}

/// [`ConvGram::push_with`] rejects bad inputs and targets as [`ConvGram::push`] does (same
/// error, nothing counted), and more maps than one batch holds.
#[test]
fn slot_targets_are_checked_as_target_rows() {
    let shape = small_shape();
    let params = GramParams::default();
    let (p, nt) = (shape.positions(), 3);
    let good = uniform_values(shape.input_len(), 9);
    let good_t = uniform_values(p * nt, 10);
    let write = |t: &[f32]| {
        let t = t.to_vec();
        move |slots: &mut TargetSlots<'_>| {
            for i in 0..slots.samples() {
                for oy in 0..shape.out_h() {
                    let row = (i * shape.out_h() + oy) * shape.out_w();
                    slots
                        .positions(i, oy)
                        .copy_from_slice(&t[row * nt..(row + shape.out_w()) * nt]);
                }
            }
        }
    };
    for (map_at, t_at) in [
        (Some(17), None),
        (None, Some(31)),
        (None, Some(0)),
        (Some(3), Some(5)),
    ] {
        let mut maps = uniform_values(2 * shape.input_len(), 5);
        let mut t = uniform_values(2 * p * nt, 6);
        if let Some(at) = map_at {
            maps[at] = f32::INFINITY;
        }
        if let Some(at) = t_at {
            t[at] = f32::NAN;
        }
        let mut rows = OwnedConvGram::new_owned(shape, params, 2).unwrap();
        rows.push(&good, 1, Some(MatRef::new(&good_t, p, nt).unwrap()))
            .unwrap();
        let want = rows
            .push(&maps, 2, Some(MatRef::new(&t, 2 * p, nt).unwrap()))
            .unwrap_err();
        let mut slots = OwnedConvGram::new_owned(shape, params, 2).unwrap();
        slots.push_with(&good, 1, write(&good_t)).unwrap();
        let got = slots.push_with(&maps, 2, write(&t)).unwrap_err();
        assert_eq!(got, want, "bad map value at {map_at:?}, target at {t_at:?}");
        assert_eq!(slots.count(), p as u64);
    }
    let mut cg = OwnedConvGram::new_owned(shape, params, 2).unwrap();
    let maps = uniform_values(3 * shape.input_len(), 5);
    let t = uniform_values(3 * p * nt, 6);
    assert!(matches!(
        cg.push_with(&maps, 3, write(&t)),
        Err(GramError::ShapeMismatch { .. })
    ));
    assert_eq!(cg.count(), 0);
}

#[test]
fn empty_accumulator_adds_nothing() {
    let shape = small_shape();
    let params = GramParams::default();
    let mut cg = OwnedConvGram::new_owned(shape, params, 2).unwrap();
    cg.push(&[], 0, Some(MatRef::new(&[], 0, 3).unwrap()))
        .unwrap();
    let mut acc = OwnedGram::new_owned(shape.dim(), 3, params);
    cg.add_to(&mut acc).unwrap();
    assert_eq!(acc.count(), 0);
    let m = read(&mut acc);
    assert!(m.gram.iter().chain(m.cross.iter()).all(|&v| v == 0.0));
}
