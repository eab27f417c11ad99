//! int4 weights for the layers where they pay (dense layer 1 holds 92% of
//! the model's bytes): per output channel, symmetric, in [-7, 7], one f32
//! scale per channel as for int8. Three ways to choose the integers:
//!
//! - [`Int4Method::Nearest`]: scale `max|w| / 7`, round to nearest;
//! - [`Int4Method::Mse`]: the scale that minimises the channel's squared
//!   rounding error (clipping the largest weights), round to nearest;
//! - [`Int4Method::Gptq`]: the `Mse` scale, then GPTQ (Frantar et al.,
//!   2022): weights rounded one input at a time, each rounding error spread
//!   over the inputs not yet rounded, weighted by the calibration inputs'
//!   second moments `H = X^T X`, so that the layer's *outputs* on the
//!   calibration data move least (not the weights).

use anyhow::{Result, bail, ensure};

/// How int4 weights are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int4Method {
    Nearest,
    Mse,
    Gptq,
}

impl std::str::FromStr for Int4Method {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "nearest" => Self::Nearest,
            "mse" => Self::Mse,
            "gptq" => Self::Gptq,
            _ => bail!("int4 method {s:?}: use nearest, mse or gptq"),
        })
    }
}

/// Largest int4 magnitude (the format refuses -8, so the range is symmetric).
pub const INT4_MAX: f32 = 7.0;

fn round_q(w: f32, s: f32) -> f32 {
    (w / s).round_ties_even().clamp(-INT4_MAX, INT4_MAX)
}

/// The scale of one channel: `max|w| / 7`, or with `mse` the clipped one
/// (ratios 0.50 to 1.00 of it, in steps of 0.01) with the least squared
/// rounding error.
pub fn channel_scale(row: &[f32], mse: bool) -> f32 {
    let amax = row.iter().fold(0f32, |m, w| m.max(w.abs()));
    if amax == 0.0 {
        return 1.0;
    }
    let full = amax / INT4_MAX;
    if !mse {
        return full;
    }
    let err = |s: f32| -> f64 {
        row.iter()
            .map(|&w| {
                let d = (w - s * round_q(w, s)) as f64;
                d * d
            })
            .sum()
    };
    (50..=100)
        .map(|r| full * r as f32 / 100.0)
        .map(|s| (err(s), s))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, s)| s)
        .unwrap_or(full)
}

/// Second moments of the calibration inputs: `H = X^T X / rows` (f64,
/// `n x n`, row-major), where `x` holds `rows` inputs of `n` values.
pub fn hessian(x: &[f32], n: usize) -> Vec<f64> {
    let rows = x.len() / n;
    let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mut h = vec![0f64; n * n];
    // SAFETY: `xd` is rows x n and `h` is n x n, both row-major: the
    // strides below describe exactly those buffers.
    unsafe {
        matrixmultiply::dgemm(
            n,
            rows,
            n,
            1.0 / rows.max(1) as f64,
            xd.as_ptr(),
            1,
            n as isize,
            xd.as_ptr(),
            n as isize,
            1,
            0.0,
            h.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    h
}

/// Lower Cholesky factor of the symmetric positive definite `a` (n x n, in
/// place; the upper triangle is left as it was).
fn cholesky(a: &mut [f64], n: usize) -> Result<()> {
    for j in 0..n {
        let (done, rest) = a.split_at_mut(j * n);
        let row_j = &mut rest[..n];
        for (k, done_row) in done.chunks_exact(n).enumerate() {
            let s = dot(&row_j[..k], &done_row[..k]);
            row_j[k] = (row_j[k] - s) / done_row[k];
        }
        let d = row_j[j] - dot(&row_j[..j], &row_j[..j]);
        ensure!(
            d > 0.0 && d.is_finite(),
            "calibration second moments not positive definite at input {j} (pivot {d:e})"
        );
        row_j[j] = d.sqrt();
    }
    Ok(())
}

/// A dot product with 8 independent sums (the compiler will not reorder a
/// float reduction by itself).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// The upper Cholesky factor `U` of `H^-1` (`H^-1 = U^T U`), which GPTQ's
/// updates read row by row. With `R` the order reversal, `R H R = L L^T`
/// gives `H^-1 = (R L^-T R)(R L^-1 R)`, and `R L^-1 R` is upper triangular:
/// one Cholesky and one triangular inverse, no full inverse.
fn inverse_upper_factor(h: &[f64], n: usize) -> Result<Vec<f64>> {
    let mut a = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            a[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
        }
    }
    cholesky(&mut a, n)?;
    // M = L^-1 (lower), column by column of the identity, stored transposed
    // so that each solve reads contiguous rows: mt[j][i] = M[i][j].
    let mut mt = vec![0f64; n * n];
    for j in 0..n {
        let col = &mut mt[j * n..(j + 1) * n];
        col[j] = 1.0 / a[j * n + j];
        for i in j + 1..n {
            let s = dot(&a[i * n + j..i * n + i], &col[j..i]);
            col[i] = -s / a[i * n + i];
        }
    }
    // U[i][j] = M[n-1-i][n-1-j] = mt[n-1-j][n-1-i], upper for j >= i;
    // written over the factor, which is no longer needed (this runs on
    // 4608 x 4608: 170 MB a matrix).
    let u = &mut a;
    for i in 0..n {
        for j in 0..n {
            u[i * n + j] = if j >= i {
                mt[(n - 1 - j) * n + (n - 1 - i)]
            } else {
                0.0
            };
        }
    }
    Ok(a)
}

/// Quantizes `rows` (`out x n`, each output channel's float weights in the
/// kernel's input order) to int4: `(scales, integers)`. `h` (the
/// calibration inputs' [`hessian`]) is needed by [`Int4Method::Gptq`].
pub fn quantize(
    rows: &[f32],
    n: usize,
    method: Int4Method,
    h: Option<&[f64]>,
) -> Result<(Vec<f32>, Vec<i8>)> {
    ensure!(n > 0 && rows.len().is_multiple_of(n), "weight rows of {n}");
    let scales: Vec<f32> = rows
        .chunks_exact(n)
        .map(|r| channel_scale(r, method != Int4Method::Nearest))
        .collect();
    let mut q = vec![0i8; rows.len()];
    if method != Int4Method::Gptq {
        for ((r, qr), &s) in rows.chunks_exact(n).zip(q.chunks_exact_mut(n)).zip(&scales) {
            for (d, &w) in qr.iter_mut().zip(r) {
                *d = round_q(w, s) as i8;
            }
        }
        return Ok((scales, q));
    }
    let Some(h) = h else {
        bail!("GPTQ needs the calibration inputs' second moments");
    };
    ensure!(h.len() == n * n, "second moments of {n} inputs");
    // Inputs that never fire carry no information: their weights do not
    // matter to the outputs; a unit diagonal keeps H invertible (as GPTQ
    // does), and 1% of the mean diagonal damps the rest.
    let mut h = h.to_vec();
    let mean = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
    let damp = 0.01 * mean.max(f64::MIN_POSITIVE);
    for i in 0..n {
        if h[i * n + i] == 0.0 {
            h[i * n + i] = 1.0;
        }
        h[i * n + i] += damp;
    }
    let u = inverse_upper_factor(&h, n)?;
    drop(h);
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let per = (rows.len() / n).div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for ((rs, qs), ss) in rows
            .chunks(per * n)
            .zip(q.chunks_mut(per * n))
            .zip(scales.chunks(per))
        {
            let u = &u;
            s.spawn(move || {
                let mut w = vec![0f64; n];
                for ((r, qr), &sc) in rs.chunks_exact(n).zip(qr_chunks(qs, n)).zip(ss) {
                    for (d, &v) in w.iter_mut().zip(r) {
                        *d = v as f64;
                    }
                    for i in 0..n {
                        let qi = round_q(w[i] as f32, sc);
                        qr[i] = qi as i8;
                        let err = (w[i] - (qi * sc) as f64) / u[i * n + i];
                        let ui = &u[i * n..(i + 1) * n];
                        for (wj, &uij) in w[i + 1..].iter_mut().zip(&ui[i + 1..]) {
                            *wj -= err * uij;
                        }
                    }
                }
            });
        }
    });
    Ok((scales, q))
}

fn qr_chunks(q: &mut [i8], n: usize) -> std::slice::ChunksExactMut<'_, i8> {
    q.chunks_exact_mut(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    #[test]
    fn inverse_factor_inverts() {
        let n = 37;
        let mut seed = 3;
        let x: Vec<f32> = (0..200 * n).map(|_| lcg(&mut seed)).collect();
        let mut h = hessian(&x, n);
        for i in 0..n {
            h[i * n + i] += 0.01;
        }
        let u = inverse_upper_factor(&h, n).unwrap();
        // H * (U^T U) = I.
        for i in 0..n {
            for j in 0..n {
                let mut v = 0.0;
                for k in 0..n {
                    let inv_kj: f64 = (0..n).map(|m| u[m * n + k] * u[m * n + j]).sum();
                    v += h[i * n + k] * inv_kj;
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-8, "({i}, {j}): {v}");
            }
        }
    }

    #[test]
    fn gptq_moves_outputs_less_than_rounding() {
        // Correlated inputs, as a conv's outputs are.
        let (n, out, samples) = (64, 8, 400);
        let mut seed = 11;
        let mut x = vec![0f32; samples * n];
        for r in 0..samples {
            let base = lcg(&mut seed);
            for i in 0..n {
                x[r * n + i] = (base + 0.5 * lcg(&mut seed)).max(0.0);
            }
        }
        let w: Vec<f32> = (0..out * n).map(|_| lcg(&mut seed) * 0.1).collect();
        let h = hessian(&x, n);
        let err = |m: Int4Method| {
            let (s, q) = quantize(&w, n, m, Some(&h)).unwrap();
            let mut e = 0f64;
            for r in 0..samples {
                for o in 0..out {
                    let (mut a, mut b) = (0f64, 0f64);
                    for i in 0..n {
                        let xi = x[r * n + i] as f64;
                        a += xi * w[o * n + i] as f64;
                        b += xi * (q[o * n + i] as f32 * s[o]) as f64;
                    }
                    e += (a - b) * (a - b);
                }
            }
            assert!(q.iter().all(|v| v.abs() <= 7));
            e
        };
        let (near, mse, gptq) = (
            err(Int4Method::Nearest),
            err(Int4Method::Mse),
            err(Int4Method::Gptq),
        );
        assert!(
            gptq < 0.7 * near && gptq < mse,
            "nearest {near} mse {mse} gptq {gptq}"
        );
    }

    #[test]
    fn methods_parse() {
        assert_eq!("gptq".parse::<Int4Method>().unwrap(), Int4Method::Gptq);
        assert!("ada".parse::<Int4Method>().is_err());
    }
}
