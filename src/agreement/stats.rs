//! The two statistics the agreement report needs, written out so they can be checked by hand.
//!
//! ```
//! use tollgate::agreement::stats::{brier, wilson};
//!
//! // 8 agreements in 10 cases: 80%, and the 95% interval is wide.
//! let (lo, hi) = wilson(8, 10).unwrap();
//! assert!((lo - 0.4902).abs() < 1e-4 && (hi - 0.9433).abs() < 1e-4);
//! // Confidence 0.9 on an agreement and 0.6 on a disagreement: (0.01 + 0.36) / 2.
//! assert!((brier([(0.9, true), (0.6, false)]).unwrap() - 0.185).abs() < 1e-12);
//! ```

/// The two-sided 95% normal quantile.
pub const Z95: f64 = 1.959_963_984_540_054;

/// The 95% Wilson score interval of a proportion: `successes` out of `n` trials, as
/// `(lower, upper)` within `[0, 1]`. `None` when `n` is zero (nothing was observed). Unlike the
/// normal approximation it stays inside `[0, 1]` and is sensible for small `n` and for rates
/// near 0 or 1: 10 agreements out of 10 give a lower bound of 0.72, not 1.
///
/// `successes` above `n` is read as `n`.
pub fn wilson(successes: u64, n: u64) -> Option<(f64, f64)> {
    wilson_z(successes, n, Z95)
}

/// The Wilson score interval for quantile `z` (see [`wilson`]).
pub fn wilson_z(successes: u64, n: u64, z: f64) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let n_f = n as f64;
    let p = successes.min(n) as f64 / n_f;
    let z2 = z * z;
    let denom = 1.0 + z2 / n_f;
    let centre = (p + z2 / (2.0 * n_f)) / denom;
    let half = z * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt() / denom;
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// The Brier score of probabilistic forecasts: the mean of `(p - o)²` over `(p, outcome)` pairs,
/// `o` being 1 for `true`. 0 is perfect, 0.25 is what always saying 0.5 scores. `None` for no
/// forecasts.
pub fn brier(forecasts: impl IntoIterator<Item = (f64, bool)>) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0u64);
    for (p, o) in forecasts {
        let d = p - if o { 1.0 } else { 0.0 };
        sum += d * d;
        n += 1;
    }
    (n > 0).then(|| sum / n as f64)
}
