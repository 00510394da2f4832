//! The rules every least-squares form of the merge shares: the ridge retry loop and the
//! choice between the primal and the dual form.
//!
//! **Retries.** A factorization of a ridge system that meets a non-positive pivot is retried
//! with the ridge multiplied by 10, up to `max_retries` times; a ridge that would become
//! infinite or is not positive is not retried. [`with_ridge_retries`] is that loop, and the
//! only one: the primal solve on a Gram block ([`ridge_solve`](super::ridge_solve)), the
//! kernel factorization of the dual form ([`dual_factor`](super::dual::dual_factor)) and the
//! allocation-free MLP merge's packed Gram all run their attempts through it.
//!
//! **Form.** [`LsForm::dual`] decides, from the shape of a fit, whether it is solved in the
//! primal form (the `k x k` Gram of its columns) or in the dual form (the `N x N` kernel of its
//! rows): the dual form when there are fewer rows than columns.

/// One failed factorization attempt: a non-positive pivot (retried with a larger ridge), or
/// any other error (returned as is).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Attempt<E> {
    /// The pivot of row `index` is `value`, not strictly positive (NaN included).
    NonPositivePivot {
        /// Row of the failing pivot.
        index: usize,
        /// The pivot value.
        value: f64,
    },
    /// Any other failure: not retried.
    Failed(E),
}

/// A successful attempt and the ridge it used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retried<T> {
    /// What the attempt returned.
    pub value: T,
    /// The ridge of the successful attempt.
    pub ridge: f64,
    /// How many times the ridge was multiplied by 10.
    pub retries: u32,
}

/// Why [`with_ridge_retries`] gave up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryError<E> {
    /// The last attempt still met a non-positive pivot.
    Exhausted {
        /// Row of the failing pivot.
        index: usize,
        /// The pivot value.
        pivot: f64,
        /// The last ridge tried.
        ridge: f64,
        /// How many times the ridge was multiplied by 10.
        retries: u32,
    },
    /// An attempt failed otherwise.
    Failed(E),
}

/// Runs `attempt(ridge)` with `first_ridge`, then, while it reports
/// [`Attempt::NonPositivePivot`], with the ridge multiplied by 10, at most `max_retries`
/// more times (never with an infinite or non-positive ridge).
pub fn with_ridge_retries<T, E>(
    first_ridge: f64,
    max_retries: u32,
    mut attempt: impl FnMut(f64) -> Result<T, Attempt<E>>,
) -> Result<Retried<T>, RetryError<E>> {
    let mut ridge = first_ridge;
    let mut retries = 0;
    loop {
        match attempt(ridge) {
            Ok(value) => {
                return Ok(Retried {
                    value,
                    ridge,
                    retries,
                });
            }
            Err(Attempt::NonPositivePivot { index, value }) => {
                let next = ridge * 10.0;
                if retries >= max_retries || !next.is_finite() || next <= 0.0 {
                    return Err(RetryError::Exhausted {
                        index,
                        pivot: value,
                        ridge,
                        retries,
                    });
                }
                ridge = next;
                retries += 1;
            }
            Err(Attempt::Failed(e)) => return Err(RetryError::Failed(e)),
        }
    }
}

/// Which form of least squares solves a fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LsForm {
    /// By shape ([`LsForm::dual`]): the dual form when the fit has fewer rows (samples, or
    /// samples times positions) than columns (bias included), the primal form otherwise (the
    /// default; the least memory).
    Auto,
    /// Always the primal form (the Gram of the fit's columns).
    Primal,
    /// Always the dual form (the kernel of the rows).
    Dual,
}

impl LsForm {
    /// Whether a fit with `rows` rows and `columns` columns is solved in the dual form.
    pub fn dual(self, rows: usize, columns: usize) -> bool {
        match self {
            LsForm::Auto => rows < columns,
            LsForm::Primal => false,
            LsForm::Dual => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_multiply_the_ridge_by_ten_until_an_attempt_succeeds() {
        let mut tried = [0.0; 3];
        let mut n = 0;
        let out = with_ridge_retries::<_, ()>(1.0, 4, |ridge| {
            tried[n] = ridge;
            n += 1;
            if ridge < 100.0 {
                Err(Attempt::NonPositivePivot {
                    index: 2,
                    value: -1.0,
                })
            } else {
                Ok(7)
            }
        })
        .unwrap();
        assert_eq!(tried, [1.0, 10.0, 100.0]);
        assert_eq!((out.value, out.ridge, out.retries), (7, 100.0, 2));
    }

    #[test]
    fn retries_stop_after_the_limit_and_report_the_last_pivot() {
        let out = with_ridge_retries::<(), ()>(1.0, 2, |ridge| {
            Err(Attempt::NonPositivePivot {
                index: 3,
                value: -ridge,
            })
        });
        assert_eq!(
            out,
            Err(RetryError::Exhausted {
                index: 3,
                pivot: -100.0,
                ridge: 100.0,
                retries: 2
            })
        );
        let zero = with_ridge_retries::<(), ()>(0.0, 4, |_| {
            Err(Attempt::NonPositivePivot {
                index: 0,
                value: 0.0,
            })
        });
        assert!(matches!(
            zero,
            Err(RetryError::Exhausted { retries: 0, .. })
        ));
        let other = with_ridge_retries::<(), u8>(1.0, 4, |_| Err(Attempt::Failed(9)));
        assert_eq!(other, Err(RetryError::Failed(9)));
    }

    #[test]
    fn auto_form_is_dual_only_with_fewer_rows_than_columns() {
        assert!(LsForm::Auto.dual(300, 785));
        assert!(!LsForm::Auto.dual(785, 785));
        assert!(LsForm::Dual.dual(1000, 2));
        assert!(!LsForm::Primal.dual(1, 2));
    }
}
