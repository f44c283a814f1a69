// Adaptive clip thresholds on the device, one workgroup, dispatched right after the norm:
// it folds this step's global norm into a small state buffer, then rewrites the clip
// coefficient the norm wrote (stats[H_COEF]) for its own threshold, and records that
// threshold (stats[H_LIMIT]). The clip of step k therefore uses the norms up to step k,
// with no host round trip. The CPU twin is `src/cpu/adaptive.rs`.
//
//   zclip     ZClip (bluorion-com/ZClip, zscore mode, adaptive_scaling): 25 warm-up
//             norms, then an EMA of the mean and variance; a norm whose z-score exceeds z
//             is clipped to mean + z²·std / z_t and that threshold is what the EMA sees.
//   autoclip  AutoClip (Seetharaman et al. 2020): the p-th percentile (numpy's linear
//             interpolation) of every norm so far, this one included; a sliding window of
//             `capacity` norms once that many have been seen.
//
// A norm that is not finite, or that came from non-finite elements (unless they were
// zeroed), never enters the statistics.

struct Config {
    method: u32,      // 1 = zclip, 2 = autoclip
    policy: u32,      // the norm's non-finite policy code
    eps: f32,         // of the coefficient, as clip_grad_norm_ (1e-6)
    cap: f32,         // max_grad_norm: the limit never exceeds it (inf: no cap)
    alpha: f32,       // zclip: EMA factor
    z: f32,           // zclip: z-score threshold
    warmup: u32,      // zclip: norms collected before the EMA starts
    percentile: f32,  // autoclip: in [0, 100]
    capacity: u32,    // autoclip: norms kept
    z_eps: f32,       // zclip: added to the std in the z-score (1e-6)
    pad0: u32,
    pad1: u32,
}

// State words: a header, then zclip's warm-up norms or autoclip's sorted window and ring.
const S_COUNT: u32 = 0u;       // norms folded in so far
const S_READY: u32 = 1u;       // zclip: the EMA is initialised
const S_MEAN: u32 = 2u;
const S_VAR: u32 = 3u;
const S_HEADER: u32 = 8u;

@group(0) @binding(0) var<storage, read_write> stats: array<u32>;
@group(0) @binding(1) var<storage, read> config: Config;
@group(0) @binding(2) var<storage, read_write> state: array<u32>;

// autoclip runs WG (common.wgsl) invocations; the host sets 64.

fn f(i: u32) -> f32 { return bitcast<f32>(state[i]); }
fn set_f(i: u32, v: f32) { state[i] = bitcast<u32>(v); }

// This step's norm, if it may enter the statistics: finite, and from finite elements
// (or from what was left after zeroing the others).
fn usable_norm() -> vec2<f32> {
    let nonfinite = stats[H_NAN] + stats[H_INF] > 0u && config.policy != POLICY_ZERO;
    let x = bitcast<f32>(stats[H_FINITE_NORM]);
    let ok = !nonfinite && (bitcast<u32>(x) & EXP_MASK) != EXP_MASK;
    return vec2<f32>(x, select(0.0, 1.0, ok));
}

fn write_coef(limit: f32) {
    let x = bitcast<f32>(stats[H_FINITE_NORM]);
    stats[H_COEF] = clip_coef_for(limit, config.eps, config.policy, stats[H_NAN], stats[H_INF], x);
    stats[H_LIMIT] = bitcast<u32>(limit);
}

@compute @workgroup_size(1)
fn zclip() {
    let n = usable_norm();
    var limit = config.cap;
    if (n.y == 0.0) { write_coef(limit); return; }
    let x = n.x;
    if (state[S_READY] == 0u) {
        // Warm-up: collect, clip by the cap alone; initialise from the population moments.
        let k = state[S_COUNT];
        set_f(S_HEADER + k, x);
        state[S_COUNT] = k + 1u;
        if (k + 1u >= config.warmup) {
            var sum = 0.0;
            for (var i = 0u; i <= k; i++) { sum += f(S_HEADER + i); }
            let mean = sum / f32(k + 1u);
            var sq = 0.0;
            for (var i = 0u; i <= k; i++) { let d = f(S_HEADER + i) - mean; sq += d * d; }
            set_f(S_MEAN, mean);
            set_f(S_VAR, sq / f32(k + 1u));
            state[S_READY] = 1u;
        }
        write_coef(limit);
        return;
    }
    let mean = f(S_MEAN);
    let sd = sqrt(f(S_VAR));
    let zscore = (x - mean) / (sd + config.z_eps);
    // Not a spike: clip_grad_norm_ by the cap alone (a coefficient of exactly 1 below it).
    var seen = x;
    if (zscore > config.z) {
        let eta = zscore / config.z;
        seen = mean + config.z * sd / eta;
        limit = min(seen, config.cap);
    }
    // The EMA of the (adaptively) clipped norm; the variance about the updated mean.
    let m = config.alpha * mean + (1.0 - config.alpha) * seen;
    let d = seen - m;
    set_f(S_MEAN, m);
    set_f(S_VAR, config.alpha * f(S_VAR) + (1.0 - config.alpha) * d * d);
    state[S_COUNT] = state[S_COUNT] + 1u;
    write_coef(limit);
}

var<workgroup> shared_count: atomic<u32>;
var<workgroup> shared_u: u32;

// How many of sorted[0..len) are below `v` (`or_equal`: at most `v`), for every invocation.
fn count_below(local: u32, len: u32, v: f32, or_equal: bool) -> u32 {
    if (local == 0u) { atomicStore(&shared_count, 0u); }
    workgroupBarrier();
    storageBarrier(); // the window as the previous shift left it
    var mine = 0u;
    for (var i = local; i < len; i += WG) {
        let s = f(S_HEADER + i);
        mine += select(0u, 1u, s < v || (or_equal && s == v));
    }
    atomicAdd(&shared_count, mine);
    workgroupBarrier();
    if (local == 0u) { shared_u = atomicLoad(&shared_count); }
    return workgroupUniformLoad(&shared_u);
}

@compute @workgroup_size(WG)
fn autoclip(@builtin(local_invocation_index) local: u32) {
    let n = usable_norm();
    if (local == 0u) { shared_u = select(0u, 1u, n.y != 0.0); }
    let usable = workgroupUniformLoad(&shared_u) != 0u;
    if (local == 0u) { shared_u = state[S_COUNT]; }
    let count = workgroupUniformLoad(&shared_u);
    let cap = config.capacity;
    let ring = S_HEADER + cap;
    var len = min(count, cap);
    if (usable) {
        let x = n.x;
        if (len == cap) {
            // The window is full: the oldest norm leaves (its first copy in sorted order).
            let old = f(ring + count % cap);
            let at = count_below(local, len, old, false);
            for (var b = at; b + 1u < len; b += WG) {
                let j = b + local;
                var v = 0u;
                if (j + 1u < len) { v = state[S_HEADER + j + 1u]; }
                storageBarrier();
                if (j + 1u < len) { state[S_HEADER + j] = v; }
                storageBarrier();
            }
            len -= 1u;
        }
        let at = count_below(local, len, x, true);
        // Shift sorted[at..len) up by one, top block first.
        var top = len;
        while (top > at) {
            let j = top - 1u - local; // moves sorted[j] to sorted[j + 1]
            let live = local < top - at;
            var v = 0u;
            if (live) { v = state[S_HEADER + j]; }
            storageBarrier();
            if (live) { state[S_HEADER + j + 1u] = v; }
            storageBarrier();
            top -= min(WG, top - at);
        }
        if (local == 0u) {
            set_f(S_HEADER + at, x);
            set_f(ring + count % cap, x);
            state[S_COUNT] = count + 1u;
        }
        len += 1u;
    }
    storageBarrier();
    if (local != 0u) { return; }
    var limit = config.cap;
    if (len > 0u) {
        // numpy.percentile, method "linear", with numpy's lerp.
        let rank = config.percentile / 100.0 * f32(len - 1u);
        let lo = min(u32(floor(rank)), len - 1u);
        let hi = min(lo + 1u, len - 1u);
        let t = rank - f32(lo);
        let a = f(S_HEADER + lo);
        let b = f(S_HEADER + hi);
        let diff = b - a;
        var p = a + diff * t;
        if (t >= 0.5) { p = b - diff * (1.0 - t); }
        limit = min(p, config.cap);
    }
    write_coef(limit);
}
