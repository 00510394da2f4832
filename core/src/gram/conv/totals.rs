//! From the lag totals to the moments of the im2row rows: [`ConvGram::add_to`] turns the
//! band and border-column products, the per-position sums and the counts into the centred
//! Gram, cross moments and sums of a [`GramAccumulator`] (the formula of the module docs).
//!
//! The Gram is written row by row: for a first tap `ka`, the products with every tap `kb` are
//! laid out (`Totals::pairs`) so that one row of patch column `(c, ka)` reads its products,
//! partner sums and counts in the accumulator's column order, and each entry is the same f64
//! expression (same operands, same order) as one entry at a time would give.

use super::{ConvGram, Geo, GramAccumulator, GramError, mismatch};

/// `[lo, hi)` clipped to `[0, n)`, empty as `(0, 0)`.
pub(super) fn clip(lo: isize, hi: isize, n: usize) -> (usize, usize) {
    let (lo, hi) = (lo.max(0) as usize, hi.clamp(0, n as isize) as usize);
    if lo < hi { (lo, hi) } else { (0, 0) }
}

/// Sum of the rectangle `rows x cols` of a map from its prefix sums (`(h + 1) x (w + 1)`).
fn rect_sum(prefix: &[f64], w: usize, rows: (usize, usize), cols: (usize, usize)) -> f64 {
    let at = |y: usize, x: usize| prefix[y * (w + 1) + x];
    at(rows.1, cols.1) - at(rows.0, cols.1) - at(rows.1, cols.0) + at(rows.0, cols.0)
}

/// Rows `[y0, y1)` and columns `[x0, x1)` of a map.
type Rect = ((usize, usize), (usize, usize));

/// Positions of a rectangle.
fn area(r: Rect) -> usize {
    (r.0.1 - r.0.0) * (r.1.1 - r.1.0)
}

/// How `count` maps of `h x w` values are stored.
#[derive(Debug, Clone, Copy)]
enum Interleave {
    /// Map after map: value `(m, y, x)` at `(m * h + y) * w + x`.
    MapMajor,
    /// Position after position: value `(m, y, x)` at `(y * w + x) * count + m`.
    PositionMajor,
}

/// `(h + 1) x (w + 1)` prefix sums of each `h x w` map, map after map.
fn prefix_sums(maps: &[f64], out: &mut [f64], count: usize, h: usize, w: usize, at: Interleave) {
    for m in 0..count {
        let value = |y: usize, x: usize| match at {
            Interleave::MapMajor => maps[(m * h + y) * w + x],
            Interleave::PositionMajor => maps[(y * w + x) * count + m],
        };
        let dst = &mut out[m * (h + 1) * (w + 1)..][..(h + 1) * (w + 1)];
        dst[..w + 1].fill(0.0);
        for y in 0..h {
            dst[(y + 1) * (w + 1)] = 0.0;
            for x in 0..w {
                dst[(y + 1) * (w + 1) + x + 1] =
                    value(y, x) + dst[y * (w + 1) + x + 1] + dst[(y + 1) * (w + 1) + x]
                        - dst[y * (w + 1) + x];
            }
        }
    }
}

/// What the moments of one column need besides the products: its natural shift `s`, the
/// accumulator's shift `big_s`, `U = sum I u` and `n = sum I` (module docs).
#[derive(Debug, Clone, Copy)]
struct Column {
    s: f64,
    big_s: f64,
    u: f64,
    n: f64,
}

impl Column {
    /// `sum (x_a - S_a)(x_b - S_b)` from the products `lambda = sum I_a I_b u_a u_b`, the
    /// pair sums `u_ab = sum I_a I_b u_a`, `u_ba`, the pair count and the row count.
    #[inline(always)]
    fn centred(
        a: &Column,
        b: &Column,
        lambda: f64,
        u_ab: f64,
        u_ba: f64,
        n_ab: f64,
        n: f64,
    ) -> f64 {
        lambda + b.s * u_ab - b.big_s * a.u + a.s * u_ba - a.big_s * b.u + a.s * b.s * n_ab
            - a.s * b.big_s * a.n
            - a.big_s * b.s * b.n
            + a.big_s * b.big_s * n
    }
}

/// The columns' values as four runs (`s`, `S`, `U`, `n`) of `dim` each.
struct Columns<'a> {
    s: &'a [f64],
    big_s: &'a [f64],
    u: &'a [f64],
    n: &'a [f64],
}

impl<'a> Columns<'a> {
    fn new(runs: &'a [f64], dim: usize) -> Self {
        let (s, rest) = runs.split_at(dim);
        let (big_s, rest) = rest.split_at(dim);
        let (u, n) = rest.split_at(dim);
        Self {
            s,
            big_s,
            u,
            n: &n[..dim],
        }
    }

    fn at(&self, a: usize) -> Column {
        Column {
            s: self.s[a],
            big_s: self.big_s[a],
            u: self.u[a],
            n: self.n[a],
        }
    }
}

/// One row of the Gram: `row[j] += centred(a, column j, ...)` for every `j` of `row`, the
/// operands of column `j` at index `j` of each slice.
#[allow(clippy::too_many_arguments)]
fn centred_row(
    a: &Column,
    cols: &Columns<'_>,
    lambda: &[f64],
    u_ab: &[f64],
    u_ba: &[f64],
    n_ab: &[f64],
    n: f64,
    row: &mut [f64],
) {
    let len = row.len();
    let operands = cols.s[..len]
        .iter()
        .zip(&cols.big_s[..len])
        .zip(&cols.u[..len])
        .zip(&cols.n[..len])
        .zip(&lambda[..len])
        .zip(&u_ab[..len])
        .zip(&u_ba[..len])
        .zip(&n_ab[..len]);
    for (out, (((((((&s, &big_s), &u), &bn), &lam), &uab), &uba), &nab)) in
        row.iter_mut().zip(operands)
    {
        let b = Column { s, big_s, u, n: bn };
        *out += Column::centred(a, &b, lam, uab, uba, nab, n);
    }
}

impl Geo {
    /// Input positions (in tap `ka`'s coordinates) where taps `ka` and `kb` of one output
    /// position are both inside the map; `ka == kb` gives the tap's own positions.
    pub(super) fn tap_rect(&self, ka: usize, kb: usize) -> Rect {
        let (ya, xa) = ((ka / self.kw) as isize, (ka % self.kw) as isize);
        let (yb, xb) = ((kb / self.kw) as isize, (kb % self.kw) as isize);
        let (h, w) = (self.h as isize, self.w as isize);
        let (ylo, yhi) = self.tap_rows(ka / self.kw);
        let (xlo, xhi) = self.tap_cols(ka % self.kw);
        (
            clip(ylo.max(ya - yb), yhi.min(h + ya - yb), self.h),
            clip(xlo.max(xa - xb), xhi.min(w + xa - xb), self.w),
        )
    }

    /// Adds `sum I_ka I_kb u_(c, ka) u_(c', kb)` of every channel pair, from the band and
    /// border-column products in `lags`, into `pair` (`C x C`, zeroed first) in the order of
    /// the stored lag (its first tap's channel first), and returns whether that order is the
    /// transpose of `(ka, kb)`'s.
    fn lag_block(&self, lags: &[f64], ka: usize, kb: usize, pair: &mut [f64]) -> bool {
        let (ya, xa) = (ka / self.kw, ka % self.kw);
        let (yb, xb) = (kb / self.kw, kb % self.kw);
        let (dy, dx) = (yb as isize - ya as isize, xb as isize - xa as isize);
        // The first tap of the stored lag (dy > 0, or dy = 0 and dx >= 0).
        let swap = dy < 0 || (dy == 0 && dx < 0);
        let (fy, fx, dy, dx) = if swap {
            (yb, xb, -dy, -dx)
        } else {
            (ya, xa, dy, dx)
        };
        let dy = dy as usize;
        let c = self.c;
        let cols = self.lag_blocks(dy) * c;
        let dxi = (dx - self.dx_min(dy)) as usize;
        let (rlo, rhi) = self.tap_rows(fy);
        let (clo, chi) = self.tap_cols(fx);
        // Taps never inside the map together: exactly zero (the band and column products
        // would cancel only up to their rounding).
        let never = area(self.tap_rect(ka, kb)) == 0;
        pair.fill(0.0);
        if dy >= self.h || never {
            return swap;
        }
        for b in 0..self.bands {
            let (y0, y1) = self.band(b);
            if (y0 as isize) < rlo || (y1 as isize) > rhi {
                continue;
            }
            let base = self.lag_offset(dy) + b * self.slots() * self.lag_len(dy);
            let mut add = |slot: usize, sign: f64| {
                let prod = &lags[base + slot * self.lag_len(dy)..][..self.lag_len(dy)];
                for (dst, src) in pair.chunks_exact_mut(c).zip(prod.chunks_exact(cols)) {
                    for (d, &v) in dst.iter_mut().zip(&src[dxi * c..][..c]) {
                        *d += sign * v;
                    }
                }
            };
            add(0, 1.0);
            for i in 0..self.border_cols {
                let x = self.border_col(i) as isize;
                if x < clo || x >= chi {
                    add(1 + i, -1.0);
                }
            }
        }
        swap
    }
}

impl<S, W> ConvGram<S, W>
where
    S: AsRef<[f64]> + AsMut<[f64]>,
    W: AsRef<[f32]> + AsMut<[f32]>,
{
    /// Adds everything accumulated to `acc`, an accumulator of the im2row rows (`dim` =
    /// patch columns plus the bias column, same targets): afterwards `acc` holds the moments
    /// it would hold had those rows been pushed into it (up to f32 block rounding). An empty
    /// `acc` without a shift adopts this one's (each patch column the shift of its channel, or
    /// 0 for a tap never inside the map; the bias column 1); otherwise the totals are moved to `acc`'s shifts in f64.
    pub fn add_to<S2, W2>(&mut self, acc: &mut GramAccumulator<S2, W2>) -> Result<(), GramError>
    where
        S2: AsRef<[f64]> + AsMut<[f64]>,
        W2: AsRef<[f32]> + AsMut<[f32]>,
    {
        let g = self.geo;
        mismatch(
            "dim of the accumulator (patch columns + bias)",
            g.dim(),
            acc.dim,
        )?;
        mismatch("targets of the accumulator", g.t, acc.targets)?;
        acc.flush();
        if self.samples == 0 {
            return Ok(());
        }
        if !acc.shift_set && acc.count() == 0 {
            self.lend_shift(acc);
        }
        let tl = self.totals;
        {
            let st = self.storage.as_mut();
            let (head, tail) = st.split_at_mut(tl.prefix_u);
            prefix_sums(
                &head[tl.map_u..tl.map_t],
                &mut tail[..tl.prefix_t - tl.prefix_u],
                g.c,
                g.h,
                g.w,
                Interleave::MapMajor,
            );
            let (head, tail) = st.split_at_mut(tl.prefix_t);
            prefix_sums(
                &head[tl.map_t..tl.sq_t],
                &mut tail[..tl.pair - tl.prefix_t],
                g.t,
                g.oh,
                g.ow,
                Interleave::PositionMajor,
            );
        }
        for a in 0..g.dim() {
            let col = self.column(acc, a);
            let st = self.storage.as_mut();
            for (run, v) in [col.s, col.big_s, col.u, col.n].into_iter().enumerate() {
                st[tl.columns + run * g.dim() + a] = v;
            }
        }
        self.add_gram(acc);
        self.add_cross(acc);
        acc.folded += self.count();
        Ok(())
    }

    /// Gives an empty `acc` this accumulator's shifts (module docs of [`GramAccumulator`]).
    fn lend_shift<S2, W2>(&self, acc: &mut GramAccumulator<S2, W2>)
    where
        S2: AsRef<[f64]> + AsMut<[f64]>,
        W2: AsRef<[f32]> + AsMut<[f32]>,
    {
        let g = self.geo;
        let (w, aw) = (self.work, acc.wlay);
        let src = self.workspace.as_ref();
        let dst = acc.workspace.as_mut();
        for a in 0..g.dim() {
            // A tap never inside the map is a column of zeros: shift 0 keeps it exact.
            let inside = || area(g.tap_rect(a % g.kk(), a % g.kk())) > 0;
            dst[aw.shift_x + a] = if a >= g.patch_len() {
                1.0
            } else if inside() {
                src[w.shift_x + a / g.kk()]
            } else {
                0.0
            };
        }
        dst[aw.shift_t..aw.shift_t + g.t].copy_from_slice(&src[w.shift_t..w.shift_t + g.t]);
        acc.shift_set = true;
    }

    /// Column `a` (patch or bias) of the moments.
    fn column<S2, W2>(&self, acc: &GramAccumulator<S2, W2>, a: usize) -> Column
    where
        S2: AsRef<[f64]> + AsMut<[f64]>,
        W2: AsRef<[f32]> + AsMut<[f32]>,
    {
        let g = self.geo;
        let n = self.count() as f64;
        let big_s = f64::from(acc.x_shift()[a]);
        if a >= g.patch_len() {
            return Column {
                s: 1.0,
                big_s,
                u: 0.0,
                n,
            };
        }
        let (c, k) = (a / g.kk(), a % g.kk());
        let (rows, cols) = g.tap_rect(k, k);
        let st = self.storage.as_ref();
        let prefix = &st[self.totals.prefix_u + c * (g.h + 1) * (g.w + 1)..];
        Column {
            s: f64::from(self.workspace.as_ref()[self.work.shift_x + c]),
            big_s,
            u: rect_sum(prefix, g.w, rows, cols),
            n: self.samples as f64 * area((rows, cols)) as f64,
        }
    }

    /// Fills the tables of first tap `ka`: the products with every tap (`pairs`), the pair
    /// sums of both sides (`tap_u`, `partner_u`) and the pair counts (`pair_n`).
    fn tap_tables(&mut self, ka: usize) {
        let g = self.geo;
        let (c, kk) = (g.c, g.kk());
        let tl = self.totals;
        let plane = (g.h + 1) * (g.w + 1);
        let st = self.storage.as_mut();
        let (head, tabs) = st.split_at_mut(tl.pair);
        let (pair, tabs) = tabs.split_at_mut(tl.pairs - tl.pair);
        let (pairs, tabs) = tabs.split_at_mut(tl.tap_u - tl.pairs);
        let (tap_u, tabs) = tabs.split_at_mut(tl.partner_u - tl.tap_u);
        let (partner_u, tabs) = tabs.split_at_mut(tl.pair_n - tl.partner_u);
        let pair_n = &mut tabs[..kk];
        let lags = &head[tl.lags..tl.cross];
        let prefix = &head[tl.prefix_u..tl.prefix_t];
        for kb in 0..kk {
            let swap = g.lag_block(lags, ka, kb, pair);
            for (i, row) in pair.chunks_exact(c).enumerate() {
                for (i2, &v) in row.iter().enumerate() {
                    // `pair` holds the stored lag's order: (c, c') of (ka, kb), or (c', c).
                    let (ch, ch2) = if swap { (i2, i) } else { (i, i2) };
                    pairs[(ch * c + ch2) * kk + kb] = v;
                }
            }
            let ra = g.tap_rect(ka, kb);
            let rb = g.tap_rect(kb, ka);
            pair_n[kb] = self.samples as f64 * area(ra) as f64;
            for ch in 0..c {
                let p = &prefix[ch * plane..];
                tap_u[ch * kk + kb] = rect_sum(p, g.w, ra.0, ra.1);
                partner_u[ch * kk + kb] = rect_sum(p, g.w, rb.0, rb.1);
            }
        }
    }

    /// Adds the centred Gram (if `acc` keeps one) and the centred squares to `acc`.
    fn add_gram<S2, W2>(&mut self, acc: &mut GramAccumulator<S2, W2>)
    where
        S2: AsRef<[f64]> + AsMut<[f64]>,
        W2: AsRef<[f32]> + AsMut<[f32]>,
    {
        let g = self.geo;
        let (d, kk) = (g.dim(), g.kk());
        for ka in 0..kk {
            self.tap_tables(ka);
            self.add_gram_rows(acc, ka);
        }
        self.add_bias_row(acc);
        let n = self.count() as f64;
        let tl = self.totals;
        let cols = Columns::new(&self.storage.as_ref()[tl.columns..], d);
        let slay = acc.slay;
        let store = acc.storage.as_mut();
        for a in 0..d {
            let col = cols.at(a);
            store[slay.sum_x + a] += col.u + col.s * col.n - col.big_s * n;
        }
    }

    /// Adds the Gram rows (and squares) of the patch columns `(c, ka)` of every channel `c`
    /// from the tables of `ka` ([`Self::tap_tables`]).
    fn add_gram_rows<S2, W2>(&mut self, acc: &mut GramAccumulator<S2, W2>, ka: usize)
    where
        S2: AsRef<[f64]> + AsMut<[f64]>,
        W2: AsRef<[f32]> + AsMut<[f32]>,
    {
        let g = self.geo;
        let (d, kk, c) = (g.dim(), g.kk(), g.c);
        let n = self.count() as f64;
        let slay = acc.slay;
        let with_gram = acc.params.gram;
        let tl = self.totals;
        let st = self.storage.as_mut();
        let (head, tabs) = st.split_at_mut(tl.row_u);
        let (row_u, tabs) = tabs.split_at_mut(tl.row_n - tl.row_u);
        let (row_n, tabs) = tabs.split_at_mut(tl.columns - tl.row_n);
        let cols = Columns::new(&tabs[..4 * d], d);
        let pairs = &head[tl.pairs..tl.tap_u];
        let tap_u = &head[tl.tap_u..tl.partner_u];
        let partner_u = &head[tl.partner_u..tl.pair_n];
        let pair_n = &head[tl.pair_n..tl.pair_n + kk];
        for run in row_n.chunks_mut(kk) {
            run.copy_from_slice(&pair_n[..run.len()]);
        }
        let store = acc.storage.as_mut();
        for ch in 0..c {
            let i = ch * kk + ka;
            let a = cols.at(i);
            let lambda = &pairs[ch * c * kk..];
            let u_ab = &tap_u[ch * kk..][..kk];
            let diag = Column::centred(&a, &a, lambda[i], u_ab[ka], partner_u[i], pair_n[ka], n);
            store[slay.sum_xx + i] += diag;
            if !with_gram {
                continue;
            }
            for run in row_u[..=i].chunks_mut(kk) {
                run.copy_from_slice(&u_ab[..run.len()]);
            }
            let row = &mut store[slay.gram + i * d..][..=i];
            centred_row(&a, &cols, lambda, row_u, partner_u, row_n, n, row);
        }
    }

    /// Adds the Gram row of the bias column (`u = 0`, `s = 1`, inside everywhere) and its
    /// square.
    fn add_bias_row<S2, W2>(&self, acc: &mut GramAccumulator<S2, W2>)
    where
        S2: AsRef<[f64]> + AsMut<[f64]>,
        W2: AsRef<[f32]> + AsMut<[f32]>,
    {
        let g = self.geo;
        if !g.bias {
            return;
        }
        let d = g.dim();
        let n = self.count() as f64;
        let slay = acc.slay;
        let with_gram = acc.params.gram;
        let cols = Columns::new(&self.storage.as_ref()[self.totals.columns..], d);
        let i = g.patch_len();
        let b = cols.at(i);
        let store = acc.storage.as_mut();
        for j in 0..=i {
            if !with_gram && j != i {
                continue;
            }
            let a = cols.at(j);
            // sum I_j u_j = U_j over the rows where the bias is inside (all of them).
            let v = Column::centred(&b, &a, 0.0, 0.0, a.u, a.n, n);
            if with_gram {
                store[slay.gram + i * d + j] += v;
            }
            if i == j {
                store[slay.sum_xx + i] += v;
            }
        }
    }

    /// Fills the per-target tables of [`Self::add_cross`]: the sums over the positions each
    /// tap covers (`tap_t`, `[k][t]`), over all positions (`all_t`), and the shift
    /// differences to `acc`'s (`delta_t`).
    fn target_tables(&mut self, t_shift: &[f32]) {
        let g = self.geo;
        let (kk, nt) = (g.kk(), g.t);
        let tl = self.totals;
        let oplane = (g.oh + 1) * (g.ow + 1);
        let own = &self.workspace.as_ref()[self.work.shift_t..][..nt];
        let st = self.storage.as_mut();
        let (head, tabs) = st.split_at_mut(tl.tap_t);
        let (tap_t, tabs) = tabs.split_at_mut(tl.all_t - tl.tap_t);
        let (all_t, tabs) = tabs.split_at_mut(nt);
        let delta_t = &mut tabs[..nt];
        for j in 0..nt {
            let prefix = &head[tl.prefix_t + j * oplane..];
            all_t[j] = rect_sum(prefix, g.ow, (0, g.oh), (0, g.ow));
            delta_t[j] = f64::from(own[j]) - f64::from(t_shift[j]);
            for k in 0..kk {
                let (ky, kx) = (k / g.kw, k % g.kw);
                let rows = clip(
                    g.ph as isize - ky as isize,
                    (g.h + g.ph) as isize - ky as isize,
                    g.oh,
                );
                let cols = clip(
                    g.pw as isize - kx as isize,
                    (g.w + g.pw) as isize - kx as isize,
                    g.ow,
                );
                tap_t[k * nt + j] = rect_sum(prefix, g.ow, rows, cols);
            }
        }
    }

    /// Adds the centred cross moments and the target sums to `acc`, one row of targets per
    /// column.
    fn add_cross<S2, W2>(&mut self, acc: &mut GramAccumulator<S2, W2>)
    where
        S2: AsRef<[f64]> + AsMut<[f64]>,
        W2: AsRef<[f32]> + AsMut<[f32]>,
    {
        let g = self.geo;
        if g.t == 0 {
            return;
        }
        let (d, kk, nt) = (g.dim(), g.kk(), g.t);
        self.target_tables(acc.t_shift());
        let n = self.count() as f64;
        let slay = acc.slay;
        let tl = self.totals;
        let st = self.storage.as_ref();
        let cols = Columns::new(&st[tl.columns..], d);
        let (tap_t, all_t) = (&st[tl.tap_t..tl.all_t], &st[tl.all_t..tl.delta_t]);
        let delta_t = &st[tl.delta_t..tl.delta_t + nt];
        let store = acc.storage.as_mut();
        for a in 0..d {
            let col = cols.at(a);
            let row = &mut store[slay.cross + a * nt..][..nt];
            let tail = col.s * col.n - col.big_s * n;
            let each = row.iter_mut().zip(delta_t).zip(all_t);
            if a < g.patch_len() {
                let (c, k) = (a / kk, a % kk);
                let (ky, kx) = (k / g.kw, k % g.kw);
                let lambda = &st[tl.cross + (ky * g.kw * g.c + kx * g.c + c) * nt..][..nt];
                let v_a = &tap_t[k * nt..][..nt];
                for (((out, &delta), &v_all), (&lam, &va)) in each.zip(lambda.iter().zip(v_a)) {
                    *out += lam + delta * col.u + col.s * va - col.big_s * v_all + delta * tail;
                }
            } else {
                for ((out, &delta), &v_all) in each {
                    *out += 0.0 + delta * col.u + col.s * v_all - col.big_s * v_all + delta * tail;
                }
            }
        }
        for j in 0..nt {
            let (delta, v_all, q) = (delta_t[j], all_t[j], st[tl.sq_t + j]);
            store[slay.sum_t + j] += v_all + n * delta;
            store[slay.sum_tt + j] += q + 2.0 * delta * v_all + n * delta * delta;
        }
    }
}
