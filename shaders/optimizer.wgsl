// Optimizer updates, one thread per parameter, as torch.optim computes them (single-tensor
// path). The learning rate is read from a device buffer (schedules write it, no new
// pipeline) and the step count lives in a device buffer that `advance` increments after
// the update. When the gradient norm flagged the step as skipped (non-finite gradients),
// neither entry point writes anything: weights, state and step stay bitwise unchanged.
//
//   sgd    g = grad + wd·p (coupled weight decay = L2); with momentum:
//          buf = g on the first step, else momentum·buf + (1 - dampening)·g;
//          g = g + momentum·buf (Nesterov) or buf; p -= lr·g          (torch.optim.SGD)
//   adamw  p *= 1 - lr·wd (decoupled); m = lerp(m, g, 1 - β1); v = β2·v + (1 - β2)·g²;
//          p -= lr / (1 - β1^t) · m / (sqrt(v) / sqrt(1 - β2^t) + eps)   (torch.optim.AdamW)

struct Hyper {
    len: u32,
    nesterov: u32,
    momentum: f32,
    dampening: f32,
    weight_decay: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
}

// Word of the gradient-norm stats holding the skip flag (norm::STATS_SKIP_OFFSET / 4).
const SKIP_WORD: u32 = 2u;

@group(0) @binding(0) var<storage, read_write> params: array<f32>;
@group(0) @binding(1) var<storage, read> grads: array<f32>;
@group(0) @binding(2) var<storage, read_write> state0: array<f32>; // momentum buffer, or exp_avg
@group(0) @binding(3) var<storage, read_write> state1: array<f32>; // exp_avg_sq
@group(0) @binding(4) var<storage, read> lr: array<f32>;
@group(0) @binding(5) var<storage, read> stats: array<u32>;
@group(0) @binding(6) var<storage, read_write> step: array<u32>;   // completed steps
@group(0) @binding(7) var<uniform> hyper: Hyper;

// The element this thread updates, or none when out of range or the step is skipped.
fn element(wid: vec3<u32>, groups: vec3<u32>, local: u32) -> u32 {
    let i = (wid.y * groups.x + wid.x) * 256u + local;
    if (i >= hyper.len || stats[SKIP_WORD] != 0u) { return 0xffffffffu; }
    return i;
}

@compute @workgroup_size(256)
fn sgd(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = element(wid, groups, local);
    if (i == 0xffffffffu) { return; }
    let p = params[i];
    var g = grads[i];
    if (hyper.weight_decay != 0.0) { g += hyper.weight_decay * p; }
    if (hyper.momentum != 0.0) {
        var buf = g;
        if (step[0] > 0u) { buf = hyper.momentum * state0[i] + (1.0 - hyper.dampening) * g; }
        state0[i] = buf;
        g = select(buf, g + hyper.momentum * buf, hyper.nesterov != 0u);
    }
    params[i] = p - lr[0] * g;
}

// b^e by squaring: exact for e = 1 and a handful of roundings otherwise.
fn powi(b: f32, e: u32) -> f32 {
    var result = 1.0;
    var base = b;
    for (var n = e; n > 0u; n >>= 1u) {
        if ((n & 1u) != 0u) { result *= base; }
        base *= base;
    }
    return result;
}

@compute @workgroup_size(256)
fn adamw(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = element(wid, groups, local);
    if (i == 0xffffffffu) { return; }
    let t = step[0] + 1u;
    let g = grads[i];
    let m = state0[i] + (1.0 - hyper.beta1) * (g - state0[i]);
    let v = hyper.beta2 * state1[i] + (1.0 - hyper.beta2) * g * g;
    state0[i] = m;
    state1[i] = v;
    let step_size = lr[0] / (1.0 - powi(hyper.beta1, t));
    let denom = sqrt(v) / sqrt(1.0 - powi(hyper.beta2, t)) + hyper.eps;
    params[i] = params[i] * (1.0 - lr[0] * hyper.weight_decay) - step_size * m / denom;
}

@compute @workgroup_size(1)
fn advance() {
    if (stats[SKIP_WORD] == 0u) { step[0] += 1u; }
}
