// Shared by the norm, clip and AGC shaders; the registry prepends it to each of them
// (WGSL has no includes). Holds the overflow-safe accumulator described in norm.wgsl.

struct Tile {
    segment: u32,
    start: u32,   // first element, relative to the bound chunk
    count: u32,
    partial: u32, // index of this tile's accumulator in `partials`
}

// An accumulator: 8 words, the same layout in partials and per-segment scratch.
struct Acc {
    exponent: i32,
    sumsq: f32,   // Σ (|x|·2^-exponent)²
    abssum: f32,  // Σ |x|·2^-exponent
    maxabs: f32,
    nan: u32,
    inf: u32,
    coef: f32,    // per-segment clip coefficient (segment scratch only)
    pad: u32,
}

// Invocations per workgroup: 256 on GPUs. The host picks fewer on CPU implementations
// such as lavapipe, where every barrier switches context once per SIMD group.
override WG: u32 = 256u;
const MAX_WG: u32 = 256u;
const EXP_MASK: u32 = 0x7f800000u;
const MIN_EXP: i32 = -126;
const MAX_EXP: i32 = 126;   // 2^-126 is the smallest normal scale factor
const NAN_BITS: u32 = 0x7fc00000u;
const INF_BITS: u32 = 0x7f800000u;
const NO_SEGMENT: u32 = 0xffffffffu;

// NormStats layout (u32 words): a 16-word header, then 4 words per segment. The Rust
// side defines them once (`kernels::norm::StatsHeader`, `SegmentRecord`);
// tests/wire_formats.rs checks these indices against its field offsets.
const H_NORM: u32 = 0u;
const H_COEF: u32 = 1u;
const H_SKIP: u32 = 2u;
const H_NONFINITE: u32 = 3u;
const H_NAN: u32 = 4u;
const H_INF: u32 = 5u;
const H_FIRST_NONFINITE: u32 = 6u;
const H_L2: u32 = 7u;
const H_L1: u32 = 8u;
const H_LINF: u32 = 9u;
const H_SEGMENTS: u32 = 10u;
const H_FINITE_NORM: u32 = 11u; // the configured norm of the finite elements alone
const H_LIMIT: u32 = 12u;       // the max_norm the global coefficient was computed with
const H_HALTED: u32 = 13u;      // Error policy: set at the first unusable step, kept after
const HEADER_WORDS: u32 = 16u;
const SEGMENT_WORDS: u32 = 4u;
// Words of one segment's record after the header.
const S_L2: u32 = 0u;
const S_L1: u32 = 1u;
const S_LINF: u32 = 2u;
const S_NONFINITE: u32 = 3u;

// Non-finite policy codes (`kernels::norm::policy`, checked by tests/wire_formats.rs).
const POLICY_PROPAGATE: u32 = 0u;
const POLICY_ERROR: u32 = 1u;
const POLICY_SKIP: u32 = 2u;
const POLICY_ZERO: u32 = 3u;

// min(1, max_norm / (norm + eps)), as torch.nn.utils.clip_grad_norm_, NaN propagating;
// `finite_norm` is the norm of the finite elements (what is left after zeroing the rest).
fn clip_coef_for(max_norm: f32, eps: f32, policy: u32, nan: u32, inf: u32, finite_norm: f32) -> u32 {
    if (nan + inf > 0u && policy != POLICY_ZERO) {
        if (policy != POLICY_PROPAGATE) { return bitcast<u32>(1.0); } // error or skip: untouched
        if (nan > 0u) { return NAN_BITS; }
        return bitcast<u32>(0.0); // max_norm / inf
    }
    return bitcast<u32>(min(1.0, max_norm / (finite_norm + eps)));
}

// ---- the accumulator --------------------------------------------------------------

struct Running {
    exponent: i32,
    scale: f32,  // 2^-exponent
    limit: f32,  // largest |x|·scale allowed before rescaling
    sumsq: f32,
    abssum: f32,
    maxabs: f32,
    nan: u32,
    inf: u32,
}

fn running_new() -> Running {
    return Running(MIN_EXP, ldexp(1.0, -MIN_EXP), 1.0, 0.0, 0.0, 0.0, 0u, 0u);
}

// Raise the exponent so that a·scale ≤ limit, shrinking the sums by an exact power of two.
fn rescale(r: ptr<function, Running>, a: f32) {
    let biased = i32((bitcast<u32>(a) >> 23u) & 0xffu);
    let e = clamp(biased - 126, (*r).exponent, MAX_EXP);
    let shift = (*r).exponent - e;
    (*r).sumsq = ldexp((*r).sumsq, 2 * shift);
    (*r).abssum = ldexp((*r).abssum, shift);
    (*r).exponent = e;
    (*r).scale = ldexp(1.0, -e);
    (*r).limit = select(1.0, 4.0, e == MAX_EXP);
}

fn add1(r: ptr<function, Running>, x: f32) {
    let bits = bitcast<u32>(x);
    if ((bits & EXP_MASK) == EXP_MASK) {
        if ((bits & 0x007fffffu) != 0u) { (*r).nan += 1u; } else { (*r).inf += 1u; }
        return;
    }
    let a = abs(x);
    if (a * (*r).scale > (*r).limit) { rescale(r, a); }
    let y = a * (*r).scale;
    (*r).sumsq += y * y;
    (*r).abssum += y;
    (*r).maxabs = max((*r).maxabs, a);
}

fn add4(r: ptr<function, Running>, v: vec4<f32>) {
    let bad = (bitcast<vec4<u32>>(v) & vec4(EXP_MASK)) == vec4(EXP_MASK);
    if (any(bad)) {
        add1(r, v.x); add1(r, v.y); add1(r, v.z); add1(r, v.w);
        return;
    }
    let a = abs(v);
    let m = max(max(a.x, a.y), max(a.z, a.w));
    if (m * (*r).scale > (*r).limit) { rescale(r, m); }
    let y = a * (*r).scale;
    (*r).sumsq += dot(y, y);
    (*r).abssum += (y.x + y.y) + (y.z + y.w);
    (*r).maxabs = max((*r).maxabs, m);
}

fn to_acc(r: Running) -> Acc {
    return Acc(r.exponent, r.sumsq, r.abssum, r.maxabs, r.nan, r.inf, 1.0, 0u);
}

fn empty_acc() -> Acc {
    return Acc(MIN_EXP, 0.0, 0.0, 0.0, 0u, 0u, 1.0, 0u);
}

// a ⊕ b at the larger exponent; exact up to the rounding of one addition per sum.
fn combine(a: Acc, b: Acc) -> Acc {
    let e = max(a.exponent, b.exponent);
    let da = a.exponent - e;
    let db = b.exponent - e;
    return Acc(
        e,
        ldexp(a.sumsq, 2 * da) + ldexp(b.sumsq, 2 * db),
        ldexp(a.abssum, da) + ldexp(b.abssum, db),
        max(a.maxabs, b.maxabs),
        a.nan + b.nan,
        a.inf + b.inf,
        1.0,
        0u,
    );
}

// ---- workgroup tree reduction (fixed order) ----------------------------------------

var<workgroup> shared_acc: array<Acc, MAX_WG>;

const FAN: u32 = 16u;

// Combines every invocation's accumulator in a fixed order: up to FAN invocations each
// fold FAN neighbours, then invocation 0 folds those (small workgroups skip the first
// level and its barrier). The result is valid in invocation 0 only.
fn reduce_workgroup(local: u32, mine: Acc) -> Acc {
    shared_acc[local] = mine;
    workgroupBarrier();
    var stride = 1u;
    if (WG > FAN) {
        stride = FAN;
        if (local * FAN < WG) {
            var acc = shared_acc[local * FAN];
            for (var i = 1u; i < FAN && local * FAN + i < WG; i++) {
                acc = combine(acc, shared_acc[local * FAN + i]);
            }
            shared_acc[local * FAN] = acc;
        }
        workgroupBarrier();
    }
    var total = shared_acc[0];
    if (local == 0u) {
        for (var i = stride; i < WG; i += stride) {
            total = combine(total, shared_acc[i]);
        }
    }
    return total;
}

// A tile cut into an aligned vec4 body and unaligned head and tail (≤ 3 elements each).
struct Span {
    start: u32,
    end: u32,
    body_start: u32,  // element index, a multiple of 4
    body_end: u32,
}

fn span(tile: Tile) -> Span {
    let end = tile.start + tile.count;
    let body_start = min((tile.start + 3u) / 4u * 4u, end);
    return Span(tile.start, end, body_start, max(end / 4u * 4u, body_start));
}

// Element `e` (0..6) of the edges: 0..3 the head, 3..6 the tail. An index ≥ `end` means
// there is no such element.
fn edge_index(s: Span, e: u32) -> u32 {
    if (e < 3u) {
        return select(s.end, s.start + e, s.start + e < s.body_start);
    }
    return s.body_end + e - 3u;
}

fn workgroup_index(wid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return wid.y * groups.x + wid.x;
}

