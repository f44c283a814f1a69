// Adaptive gradient clipping (AGC), unit-wise, as optax.adaptive_grad_clip:
//   max_norm = max(‖p_unit‖, eps) · clipping
//   g_unit  ← g_unit                              if ‖g_unit‖ < max_norm
//             g_unit · max_norm / max(‖g_unit‖, 1e-6)  otherwise
// A unit is a contiguous run of a segment (a row of a row-major weight, a whole bias).
// One workgroup per unit; both norms use the overflow-safe accumulator.

struct Unit {
    grad_start: u32,   // first element in the bound gradient window
    param_start: u32,  // first element in the bound parameter window
    len: u32,
    pad: u32,
}

override CLIPPING: f32 = 0.01;
override EPS: f32 = 0.001;
override ZERO_NONFINITE: bool = false;

@group(0) @binding(0) var<storage, read_write> grads: array<f32>;
@group(0) @binding(1) var<storage, read> weights: array<f32>;
@group(0) @binding(2) var<storage, read> units: array<Unit>;
@group(0) @binding(3) var<storage, read> stats: array<u32>;

var<workgroup> shared_coef: u32;

fn l2_bits(a: Acc) -> u32 {
    if (a.nan > 0u) { return NAN_BITS; }
    if (a.inf > 0u) { return INF_BITS; }
    return bitcast<u32>(sqrt(a.sumsq) * ldexp(1.0, a.exponent));
}

@compute @workgroup_size(WG)
fn agc(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let u = workgroup_index(wid, groups);
    // Uniform across the workgroup: the barriers in reduce_workgroup stay uniform.
    let live = u < arrayLength(&units) && stats[H_SKIP] == 0u;
    var unit = Unit(0u, 0u, 0u, 0u);
    if (live) { unit = units[u]; }
    var g = running_new();
    var p = running_new();
    for (var i = local; i < unit.len; i += WG) {
        add1(&g, grads[unit.grad_start + i]);
        add1(&p, weights[unit.param_start + i]);
    }
    var gacc = reduce_workgroup(local, to_acc(g));
    workgroupBarrier(); // invocation 0 has read shared_acc before it is reused
    let pacc = reduce_workgroup(local, to_acc(p));
    if (local == 0u) {
        if (ZERO_NONFINITE) { gacc.nan = 0u; gacc.inf = 0u; }
        let g_norm = bitcast<f32>(l2_bits(gacc));
        let p_norm = bitcast<f32>(l2_bits(pacc));
        var coef_bits = bitcast<u32>(1.0);
        if (gacc.nan > 0u || pacc.nan > 0u) {
            coef_bits = NAN_BITS;
        } else {
            // max(p_norm, EPS) with p_norm possibly inf: comparisons are exact there.
            let max_norm = select(EPS, p_norm, p_norm > EPS) * CLIPPING;
            if (!(g_norm < max_norm)) {
                coef_bits = bitcast<u32>(max_norm / select(1e-6, g_norm, g_norm > 1e-6));
            }
        }
        shared_coef = coef_bits;
    }
    workgroupBarrier();
    let coef = bitcast<f32>(shared_coef);
    if (!live || (coef == 1.0 && !ZERO_NONFINITE)) { return; }
    for (var i = local; i < unit.len; i += WG) {
        var x = grads[unit.grad_start + i];
        if (ZERO_NONFINITE && (bitcast<u32>(x) & EXP_MASK) == EXP_MASK) { x = 0.0; }
        grads[unit.grad_start + i] = x * coef;
    }
}
