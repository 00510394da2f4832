//! Unit similarities for matching, from streamed moment sums.
//!
//! For a permutation group, every sample (for convolutions: every sample and position) gives
//! an activation vector `a` of model A's units and `b` of model B's. With the count `n`, the
//! means, the centred cross moment `C = sum (a - mean_a)(b - mean_b)^T` and the centred squares
//! `Va = sum (a - mean_a)^2`, `Vb` (all read from a [`GramAccumulator`](crate::gram) fed `a` as
//! samples and `b` as targets), the three metrics are
//!
//! - `neg-l2`: `S[i, j] = -sqrt(sum (a_i - b_j)^2)` with
//!   `sum (a_i - b_j)^2 = Va_i + Vb_j - 2 C_ij + n (mean_a_i - mean_b_j)^2` (no cancellation
//!   between large uncentred sums);
//! - `inner`: `S[i, j] = sum a_i b_j = C_ij + n mean_a_i mean_b_j`;
//! - `correlation`: `S[i, j] = C_ij / sqrt(Va_i Vb_j)`, defined as 0 when either unit is
//!   constant over the data (a dead unit correlates with nothing).

use core::fmt;

use crate::linalg::{MatMut, MatRef};

/// Which similarity to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metric {
    /// Negative Euclidean distance between activation vectors (the PLeaS default).
    #[default]
    NegL2,
    /// Inner product of activation vectors (Git Re-Basin's activation matching).
    Inner,
    /// Pearson correlation (ZipIt!).
    Correlation,
}

impl Metric {
    /// The metric's command-line name: `neg-l2`, `inner` or `correlation`.
    pub fn name(self) -> &'static str {
        match self {
            Metric::NegL2 => "neg-l2",
            Metric::Inner => "inner",
            Metric::Correlation => "correlation",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "neg-l2" => Some(Metric::NegL2),
            "inner" => Some(Metric::Inner),
            "correlation" => Some(Metric::Correlation),
            _ => None,
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Centred moment sums of two sets of units over the same samples.
#[derive(Debug, Clone, Copy)]
pub struct CentredMoments<'a> {
    /// Number of samples.
    pub count: f64,
    /// Mean of each A unit (length `n_a`).
    pub mean_a: &'a [f64],
    /// Mean of each B unit (length `n_b`).
    pub mean_b: &'a [f64],
    /// Centred squares of each A unit (length `n_a`).
    pub squares_a: &'a [f64],
    /// Centred squares of each B unit (length `n_b`).
    pub squares_b: &'a [f64],
    /// Centred cross moment, `n_a x n_b`.
    pub cross: MatRef<'a, f64>,
}

/// Why a similarity could not be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SimilarityError {
    /// A length or shape disagrees with the cross moment's.
    ShapeMismatch {
        /// What disagrees.
        what: &'static str,
        /// Expected size.
        expected: usize,
        /// Found size.
        found: usize,
    },
    /// No samples were seen.
    NoSamples,
    /// A moment is NaN or infinite (at row, column of the output).
    NonFinite {
        /// Row (A unit).
        row: usize,
        /// Column (B unit).
        col: usize,
    },
}

impl fmt::Display for SimilarityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SimilarityError::ShapeMismatch {
                what,
                expected,
                found,
            } => write!(f, "{what}: expected {expected}, found {found}"),
            SimilarityError::NoSamples => f.write_str("no samples: the similarity is undefined"),
            SimilarityError::NonFinite { row, col } => {
                write!(f, "non-finite similarity at A unit {row}, B unit {col}")
            }
        }
    }
}

impl core::error::Error for SimilarityError {}

fn check(what: &'static str, expected: usize, found: usize) -> Result<(), SimilarityError> {
    if expected == found {
        Ok(())
    } else {
        Err(SimilarityError::ShapeMismatch {
            what,
            expected,
            found,
        })
    }
}

/// neg-l2 of one pair from its centred moments (see the module docs):
/// `-sqrt(Va_i + Vb_j - 2 C_ij + n (mean_a_i - mean_b_j)^2)`, with `mean_diff` the difference
/// of the means; NaN when the sum is not finite (overflowed moments), which the callers
/// report. The one neg-l2 of the host and the device merge.
#[inline]
pub fn neg_l2(squares_a: f64, squares_b: f64, cross: f64, mean_diff: f64, count: f64) -> f64 {
    let sq = squares_a + squares_b - 2.0 * cross + count * mean_diff * mean_diff;
    if sq.is_finite() {
        -libm::sqrt(sq.max(0.0))
    } else {
        f64::NAN
    }
}

/// Writes the `n_a x n_b` similarity matrix of `metric` into `out`.
pub fn similarity(
    metric: Metric,
    m: &CentredMoments<'_>,
    mut out: MatMut<'_, f64>,
) -> Result<(), SimilarityError> {
    let (na, nb) = m.cross.shape();
    check("length of mean_a", na, m.mean_a.len())?;
    check("length of squares_a", na, m.squares_a.len())?;
    check("length of mean_b", nb, m.mean_b.len())?;
    check("length of squares_b", nb, m.squares_b.len())?;
    check("rows of the output", na, out.rows())?;
    check("columns of the output", nb, out.cols())?;
    if m.count <= 0.0 {
        return Err(SimilarityError::NoSamples);
    }
    let n = m.count;
    for i in 0..na {
        for j in 0..nb {
            let c = m.cross.at(i, j);
            let v = match metric {
                Metric::NegL2 => neg_l2(
                    m.squares_a[i],
                    m.squares_b[j],
                    c,
                    m.mean_a[i] - m.mean_b[j],
                    n,
                ),
                Metric::Inner => c + n * m.mean_a[i] * m.mean_b[j],
                Metric::Correlation => {
                    let denom = libm::sqrt(m.squares_a[i] * m.squares_b[j]);
                    if denom > 0.0 {
                        (c / denom).clamp(-1.0, 1.0)
                    } else {
                        0.0
                    }
                }
            };
            if !v.is_finite() {
                return Err(SimilarityError::NonFinite { row: i, col: j });
            }
            *out.at_mut(i, j) = v;
        }
    }
    Ok(())
}

/// Reads the centred moments of an accumulator fed A's activations as samples and B's as
/// targets, and writes the similarity of `metric` (`dim x targets`) into `out`.
#[cfg(feature = "alloc")]
pub fn similarity_from_accumulator<S, W>(
    metric: Metric,
    acc: &mut crate::gram::GramAccumulator<S, W>,
    out: MatMut<'_, f64>,
) -> Result<(), SimilarityFromMomentsError>
where
    S: AsRef<[f64]> + AsMut<[f64]>,
    W: AsRef<[f32]> + AsMut<[f32]>,
{
    use alloc::vec;
    let (na, nb) = (acc.dim(), acc.targets());
    let n = acc.count() as f64;
    let mut cross = vec![0.0; na * nb];
    acc.write_centred_cross(MatMut::new(&mut cross, na, nb).expect("sized"))?;
    let (mut mean_a, mut mean_b) = (vec![0.0; na], vec![0.0; nb]);
    acc.write_sum_x(&mut mean_a)?;
    acc.write_sum_t(&mut mean_b)?;
    if n > 0.0 {
        mean_a.iter_mut().for_each(|v| *v /= n);
        mean_b.iter_mut().for_each(|v| *v /= n);
    }
    let (mut sq_a, mut sq_b) = (vec![0.0; na], vec![0.0; nb]);
    acc.write_centred_squares_x(&mut sq_a)?;
    acc.write_centred_squares_t(&mut sq_b)?;
    let moments = CentredMoments {
        count: n,
        mean_a: &mean_a,
        mean_b: &mean_b,
        squares_a: &sq_a,
        squares_b: &sq_b,
        cross: MatRef::new(&cross, na, nb).expect("sized"),
    };
    similarity(metric, &moments, out)?;
    Ok(())
}

/// Why [`similarity_from_accumulator`] failed: reading the moments or computing the metric.
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SimilarityFromMomentsError {
    /// Reading the accumulator failed.
    Moments(crate::gram::GramError),
    /// The similarity itself failed.
    Similarity(SimilarityError),
}

#[cfg(feature = "alloc")]
impl From<crate::gram::GramError> for SimilarityFromMomentsError {
    fn from(e: crate::gram::GramError) -> Self {
        Self::Moments(e)
    }
}

#[cfg(feature = "alloc")]
impl From<SimilarityError> for SimilarityFromMomentsError {
    fn from(e: SimilarityError) -> Self {
        Self::Similarity(e)
    }
}

#[cfg(feature = "alloc")]
impl fmt::Display for SimilarityFromMomentsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Moments(e) => write!(f, "reading moments: {e}"),
            Self::Similarity(e) => write!(f, "similarity: {e}"),
        }
    }
}

#[cfg(feature = "alloc")]
impl core::error::Error for SimilarityFromMomentsError {}
