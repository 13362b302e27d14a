//! The little dense linear algebra the device-level detectors need, on row-major `d×d` slices
//! (d ≤ 16): Cholesky factorisation and solves, and the cyclic Jacobi eigen-decomposition.
//! Hand-written rather than a crate: a few dozen lines against nalgebra's size on a Pi binary.

// Index loops read as the formulas they implement.
#![allow(clippy::needless_range_loop)]

/// Factorises the symmetric positive-definite `a` (row-major `d×d`) in place into its lower
/// Cholesky factor `L` (`a = L·Lᵀ`; the upper triangle is zeroed). False when `a` is not
/// positive definite (then `a` is garbage).
pub fn cholesky(a: &mut [f64], d: usize) -> bool {
    for j in 0..d {
        let mut s = a[j * d + j];
        for k in 0..j {
            s -= a[j * d + k] * a[j * d + k];
        }
        if s.is_nan() || s <= 0.0 || !s.is_finite() {
            return false;
        }
        let ljj = s.sqrt();
        a[j * d + j] = ljj;
        for i in j + 1..d {
            let mut s = a[i * d + j];
            for k in 0..j {
                s -= a[i * d + k] * a[j * d + k];
            }
            a[i * d + j] = s / ljj;
        }
        for k in j + 1..d {
            a[j * d + k] = 0.0;
        }
    }
    true
}

/// Solves `L·y = b` (forward substitution) into `y`.
pub fn solve_lower(l: &[f64], d: usize, b: &[f64], y: &mut [f64]) {
    for i in 0..d {
        let mut s = b[i];
        for k in 0..i {
            s -= l[i * d + k] * y[k];
        }
        y[i] = s / l[i * d + i];
    }
}

/// Solves `Lᵀ·x = y` (back substitution) in place.
pub fn solve_upper_t(l: &[f64], d: usize, y: &mut [f64]) {
    for i in (0..d).rev() {
        let mut s = y[i];
        for k in i + 1..d {
            s -= l[k * d + i] * y[k];
        }
        y[i] = s / l[i * d + i];
    }
}

/// Eigenvalues (descending) and eigenvectors (columns of the returned row-major matrix, in the
/// same order) of the symmetric `a` by cyclic Jacobi rotations.
pub fn symmetric_eigen(a: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut m = a.to_vec();
    let mut v = vec![0.0; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * d + j] * m[i * d + j])
            .sum();
        let scale: f64 = (0..d).map(|i| m[i * d + i] * m[i * d + i]).sum();
        if off <= 1e-30 * scale.max(1e-300) {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = m[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (m[q * d + q] - m[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let mkp = m[k * d + p];
                    let mkq = m[k * d + q];
                    m[k * d + p] = c * mkp - s * mkq;
                    m[k * d + q] = s * mkp + c * mkq;
                }
                for k in 0..d {
                    let mpk = m[p * d + k];
                    let mqk = m[q * d + k];
                    m[p * d + k] = c * mpk - s * mqk;
                    m[q * d + k] = s * mpk + c * mqk;
                }
                for k in 0..d {
                    let vkp = v[k * d + p];
                    let vkq = v[k * d + q];
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| m[j * d + j].total_cmp(&m[i * d + i]));
    let vals = order.iter().map(|&i| m[i * d + i]).collect();
    let mut vecs = vec![0.0; d * d];
    for (c, &i) in order.iter().enumerate() {
        for k in 0..d {
            vecs[k * d + c] = v[k * d + i];
        }
    }
    (vals, vecs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spd(d: usize, seed: &[f64]) -> Vec<f64> {
        // B·Bᵀ + d·I is symmetric positive definite.
        let b = |i: usize, j: usize| seed[(i * d + j) % seed.len()];
        let mut a = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                a[i * d + j] = (0..d).map(|k| b(i, k) * b(j, k)).sum::<f64>();
            }
            a[i * d + i] += d as f64;
        }
        a
    }

    proptest! {
        #[test]
        fn cholesky_solves_and_eigen_reconstructs(
            d in 1usize..9,
            seed in proptest::collection::vec(-3.0f64..3.0, 1..81),
            b in proptest::collection::vec(-10.0f64..10.0, 8),
        ) {
            let a = spd(d, &seed);
            let mut l = a.clone();
            prop_assert!(cholesky(&mut l, d));
            let mut y = vec![0.0; d];
            solve_lower(&l, d, &b[..d], &mut y);
            solve_upper_t(&l, d, &mut y);
            for i in 0..d {
                let ax: f64 = (0..d).map(|k| a[i * d + k] * y[k]).sum();
                prop_assert!((ax - b[i]).abs() < 1e-8 * (1.0 + b[i].abs()), "row {i}: {ax} vs {}", b[i]);
            }
            let (vals, vecs) = symmetric_eigen(&a, d);
            for w in vals.windows(2) {
                prop_assert!(w[0] >= w[1]);
            }
            for i in 0..d {
                for j in 0..d {
                    let r: f64 = (0..d).map(|k| vecs[i * d + k] * vals[k] * vecs[j * d + k]).sum();
                    prop_assert!((r - a[i * d + j]).abs() < 1e-7 * (1.0 + a[i * d + j].abs()));
                }
            }
        }
    }

    #[test]
    fn not_positive_definite_is_refused() {
        let mut a = vec![1.0, 2.0, 2.0, 1.0];
        assert!(!cholesky(&mut a, 2));
    }
}
