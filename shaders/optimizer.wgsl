// Optimizer updates as torch.optim computes them, over many tensors in one dispatch (a
// multi-tensor apply, as apex's fused optimizers): a chunk table gives each workgroup one
// run of one tensor (segment). The learning rate is read from a device buffer (schedules
// write it, no new pipeline); the step count lives at the end of the state buffer and
// `advance` increments it after the update. When the gradient norm flagged the step as
// skipped (non-finite gradients), neither entry point writes anything: weights, state and
// step stay bitwise unchanged.
//
// Gradients are clipped as they are read (SCALE): by the norm's global coefficient
// (clip_grad_norm_) or by each segment's own (per-tensor clipnorm), so no separate pass
// rewrites them; ZERO_NONFINITE reads NaN and ±inf as 0.
//
//   sgd    g = grad + wd·p (coupled weight decay = L2); with momentum:
//          buf = g on the first step, else momentum·buf + (1 - dampening)·g;
//          g = g + momentum·buf (Nesterov) or buf; p -= lr·g          (torch.optim.SGD)
//   adamw  p *= 1 - lr·wd (decoupled); m = lerp(m, g, 1 - β1); v = β2·v + (1 - β2)·g²;
//          p -= lr / (1 - β1^t) · m / (sqrt(v) / sqrt(1 - β2^t) + eps)   (torch.optim.AdamW)

struct Hyper {
    len: u32,     // elements per state slot: state[s·len + i] is slot s of element i
    slots: u32,   // state slots; the completed steps are counted at state[slots·len]
    nesterov: u32,
    momentum: f32,
    dampening: f32,
    weight_decay: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

// A run of at most CHUNK elements of one segment.
struct Chunk {
    start: u32,
    end: u32,
    segment: u32,
    pad: u32,
}

override SCALE: u32 = 0u; // 0 none, 1 the global clip coefficient, 2 the segment's
override ZERO_NONFINITE: bool = false;
const CHUNK: u32 = 1024u;

// Words of the gradient-norm stats and of its per-segment scratch (norm::STATS_*).
const SKIP_WORD: u32 = 2u;
const COEF_WORD: u32 = 1u;
const SEGMENT_STRIDE: u32 = 8u;
const SEGMENT_COEF_WORD: u32 = 6u;

@group(0) @binding(0) var<storage, read_write> params: array<f32>;
@group(0) @binding(1) var<storage, read> grads: array<f32>;
@group(0) @binding(2) var<storage, read_write> state: array<f32>;
@group(0) @binding(3) var<storage, read> lr: array<f32>;
@group(0) @binding(4) var<storage, read> stats: array<u32>;
@group(0) @binding(5) var<storage, read> segments: array<u32>;
@group(0) @binding(6) var<storage, read> chunks: array<Chunk>;
@group(0) @binding(7) var<uniform> hyper: Hyper;

// Counted in f32, exact to 2^24 steps (the host refuses more), to keep one state buffer.
fn step_count() -> u32 {
    return u32(state[hyper.slots * hyper.len]);
}

// The chunk of this workgroup, or none when past the table or the step is skipped.
fn chunk_of(wid: vec3<u32>, groups: vec3<u32>) -> Chunk {
    let c = wid.y * groups.x + wid.x;
    if (c >= arrayLength(&chunks) || stats[SKIP_WORD] != 0u) { return Chunk(0u, 0u, 0u, 0u); }
    return chunks[c];
}

fn coefficient(chunk: Chunk) -> f32 {
    if (SCALE == 1u) { return bitcast<f32>(stats[COEF_WORD]); }
    if (SCALE == 2u) { return bitcast<f32>(segments[chunk.segment * SEGMENT_STRIDE + SEGMENT_COEF_WORD]); }
    return 1.0;
}

// The gradient the update uses: clipped, and NaN/inf zeroed under ZERO_NONFINITE.
fn gradient(i: u32, coef: f32) -> f32 {
    var g = grads[i];
    if (ZERO_NONFINITE && (bitcast<u32>(g) & 0x7f800000u) == 0x7f800000u) { g = 0.0; }
    if (SCALE != 0u) { g *= coef; }
    return g;
}

@compute @workgroup_size(256)
fn sgd(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let chunk = chunk_of(wid, groups);
    let coef = coefficient(chunk);
    let first = step_count() == 0u;
    for (var i = chunk.start + local; i < chunk.end; i += 256u) {
        let p = params[i];
        var g = gradient(i, coef);
        if (hyper.weight_decay != 0.0) { g += hyper.weight_decay * p; }
        if (hyper.momentum != 0.0) {
            var buf = g;
            if (!first) { buf = hyper.momentum * state[i] + (1.0 - hyper.dampening) * g; }
            state[i] = buf;
            g = select(buf, g + hyper.momentum * buf, hyper.nesterov != 0u);
        }
        params[i] = p - lr[0] * g;
    }
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
    let chunk = chunk_of(wid, groups);
    let coef = coefficient(chunk);
    let t = step_count() + 1u;
    let step_size = lr[0] / (1.0 - powi(hyper.beta1, t));
    let correction2 = sqrt(1.0 - powi(hyper.beta2, t));
    for (var i = chunk.start + local; i < chunk.end; i += 256u) {
        let g = gradient(i, coef);
        let j = hyper.len + i;
        let m = state[i] + (1.0 - hyper.beta1) * (g - state[i]);
        let v = hyper.beta2 * state[j] + (1.0 - hyper.beta2) * g * g;
        state[i] = m;
        state[j] = v;
        let denom = sqrt(v) / correction2 + hyper.eps;
        params[i] = params[i] * (1.0 - lr[0] * hyper.weight_decay) - step_size * m / denom;
    }
}

@compute @workgroup_size(1)
fn advance() {
    if (stats[SKIP_WORD] == 0u) { state[hyper.slots * hyper.len] += 1.0; }
}
