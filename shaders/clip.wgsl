// In-place clipping over the same tiles as the norm, reading its result on the device.
//
//   MODE 0  scale every element by the global clip coefficient (clip_grad_norm_)
//   MODE 1  scale each segment by its own coefficient (per-tensor clipnorm)
//   MODE 2  clamp each element to [-clip_value, clip_value] (clip_grad_value_), NaN kept
// ZERO_NONFINITE replaces NaN and ±inf by 0 first (the norm already left them out).
// When the norm stage flagged the step as skipped, nothing is written: a skipped step
// loses no data.

override MODE: u32 = 0u;
override ZERO_NONFINITE: bool = false;
override CLIP_VALUE: f32 = 1.0;
// WG (common.wgsl) is set by the host: `kernels::streaming_workgroup_size`.

// The window's data as two disjoint views (WebGPU forbids overlapping writable
// bindings): data4 holds the elements below `split`, data1 those from `split` on.
@group(0) @binding(0) var<storage, read_write> data4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> data1: array<f32>;
@group(0) @binding(2) var<storage, read> tiles: array<Tile>;
@group(0) @binding(3) var<storage, read> stats: array<u32>;
@group(0) @binding(4) var<storage, read> segments: array<Acc>;

fn nonfinite4(v: vec4<f32>) -> vec4<bool> {
    return (bitcast<vec4<u32>>(v) & vec4(EXP_MASK)) == vec4(EXP_MASK);
}

fn clip4(v: vec4<f32>, coef: f32) -> vec4<f32> {
    let bad = nonfinite4(v);
    var x = v;
    if (ZERO_NONFINITE) { x = select(x, vec4(0.0), bad); }
    if (MODE == 2u) {
        // clamp() leaves NaN implementation-defined; keep it NaN as torch.clamp does.
        let is_nan = bad & ((bitcast<vec4<u32>>(x) & vec4(0x007fffffu)) != vec4(0u));
        return select(clamp(x, vec4(-CLIP_VALUE), vec4(CLIP_VALUE)), x, is_nan);
    }
    return x * coef;
}

// The first element of data1. A real vec4 view spans whole multiples of 256 bytes
// (SPLIT_ALIGN on the host), 16 vec4s or more; the 16-byte placeholder means none.
fn split() -> u32 {
    let n = arrayLength(&data4);
    return select(0u, n * 4u, n >= 16u);
}

// Clips element j of the window, wherever it lies. A component store touches only its own
// 4 bytes, so tiles that share a vec4 (a segment boundary inside it) do not race.
fn clip1(j: u32, split: u32, coef: f32) {
    if (j < split) {
        data4[j / 4u][j % 4u] = clip4(vec4(data4[j / 4u][j % 4u]), coef).x;
    } else {
        data1[j - split] = clip4(vec4(data1[j - split]), coef).x;
    }
}

@compute @workgroup_size(WG)
fn clip(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let t = workgroup_index(wid, groups);
    if (t >= arrayLength(&tiles) || stats[H_SKIP] != 0u) { return; }
    let tile = tiles[t];
    var coef = 1.0;
    if (MODE == 0u) { coef = bitcast<f32>(stats[H_COEF]); }
    if (MODE == 1u) { coef = segments[tile.segment].coef; }
    // Scaling by exactly 1 changes nothing: skip the write traffic.
    if (MODE != 2u && !ZERO_NONFINITE && coef == 1.0) { return; }

    let s = span(tile);
    let split = split();
    // vec4s up to the split, single elements for the head and for everything after it
    // (at most the window's last 63 elements, plus the tail).
    let body_end = max(min(s.body_end, split), s.body_start);
    for (var i = s.body_start / 4u + local; i < body_end / 4u; i += WG) {
        data4[i] = clip4(data4[i], coef);
    }
    for (var j = s.start + local; j < s.body_start; j += WG) {
        clip1(j, split, coef);
    }
    for (var j = body_end + local; j < s.end; j += WG) {
        clip1(j, split, coef);
    }
}
