// Losses as torch.nn.functional computes them with reduction='mean', each writing the
// loss gradient (for an upstream gradient of 1) in the same pass:
//   cross_entropy  one workgroup per row of logits [rows, cols] with u32 class targets:
//                  loss_r = (max_r - x_r[t_r]) + log Σ exp(x_r - max_r), which neither overflows
//                  nor loses log Σ beside huge logits,
//                  grad_r = (softmax(x_r) - onehot(t_r)) / rows. A target ≥ cols (torch
//                  raises) makes that row's loss and gradient NaN, which the norm reports.
//   mse            (x - y)² per element, grad 2(x - y) / n, one partial sum per workgroup.
//   mean           one workgroup: loss = Σ partials / denominator, in a fixed order.
// Every reduction has a fixed order, so the loss is bitwise reproducible.

struct Params {
    rows: u32,     // cross_entropy: rows; mse: elements
    cols: u32,
    partials: u32, // partial sums the mean stage adds
    denom: u32,    // the mean's denominator
}

@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<u32>; // class ids, or f32 bits for mse
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> partials: array<f32>;
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

const NAN_BITS: u32 = 0x7fc00000u;
const NEG_INF_BITS: u32 = 0xff800000u;

var<workgroup> scratch: array<f32, 256>;

// Tree reduction over the first `n` (a power of two) threads; `use_max` picks max over sum.
fn reduce(local: u32, n: u32, value: f32, use_max: bool) -> f32 {
    scratch[local] = value;
    workgroupBarrier();
    for (var stride = n / 2u; stride > 0u; stride /= 2u) {
        if (local < stride) {
            let other = scratch[local + stride];
            scratch[local] = select(scratch[local] + other, max(scratch[local], other), use_max);
        }
        workgroupBarrier();
    }
    let result = scratch[0];
    workgroupBarrier(); // scratch is reused by the next reduction
    return result;
}

const CE_WG: u32 = 64u;

@compute @workgroup_size(64)
fn cross_entropy(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let row = wid.y * groups.x + wid.x;
    if (row >= params.rows) { return; }
    let cols = params.cols;
    let base = row * cols;
    var m = bitcast<f32>(NEG_INF_BITS);
    for (var j = local; j < cols; j += CE_WG) { m = max(m, input[base + j]); }
    m = reduce(local, CE_WG, m, true);
    var s = 0.0;
    for (var j = local; j < cols; j += CE_WG) { s += exp(input[base + j] - m); }
    s = reduce(local, CE_WG, s, false);

    let t = targets[row];
    let valid = t < cols;
    let inv_rows = 1.0 / f32(params.rows);
    for (var j = local; j < cols; j += CE_WG) {
        let p = exp(input[base + j] - m) / s;
        let g = (p - select(0.0, 1.0, j == t)) * inv_rows;
        grad[base + j] = select(bitcast<f32>(NAN_BITS), g, valid);
    }
    if (local == 0u) {
        partials[row] = select(bitcast<f32>(NAN_BITS), (m - input[base + min(t, cols - 1u)]) + log(s), valid);
    }
}

@compute @workgroup_size(256)
fn mse(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let g = wid.y * groups.x + wid.x;
    if (g >= params.partials) { return; }
    let i = g * 256u + local;
    var sq = 0.0;
    if (i < params.rows) {
        let d = input[i] - bitcast<f32>(targets[i]);
        grad[i] = 2.0 * d / f32(params.rows);
        sq = d * d;
    }
    let total = reduce(local, 256u, sq, false);
    if (local == 0u) { partials[g] = total; }
}

@compute @workgroup_size(256)
fn mean(@builtin(local_invocation_index) local: u32) {
    var sum = 0.0;
    for (var i = local; i < params.partials; i += 256u) { sum += partials[i]; }
    let total = reduce(local, 256u, sum, false);
    if (local == 0u) { loss[0] = total / f32(params.denom); }
}
