//! Twin of `shaders/agc.wgsl`: unit-wise adaptive gradient clipping (optax).

/// Clips each `unit`-long run of `g` against the same run of `p`, in place.
pub fn agc(g: &mut [f32], p: &[f32], unit: usize, clipping: f32, eps: f32) {
    for (gu, pu) in g.chunks_mut(unit).zip(p.chunks(unit)) {
        let g_norm = l2(gu);
        let p_norm = l2(pu);
        let max_norm = p_norm.max(eps) * clipping;
        let coef = if p_norm.is_nan() || g_norm.is_nan() {
            f32::NAN
        } else if g_norm < max_norm {
            1.0
        } else {
            max_norm / g_norm.max(1e-6)
        };
        gu.iter_mut().for_each(|x| *x *= coef);
    }
}

/// L2 norm in f64, NaN/inf propagating, rounded to f32.
fn l2(v: &[f32]) -> f32 {
    v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt() as f32
}
