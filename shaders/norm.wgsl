// Gradient norm in three dispatches, with no float atomics and no CPU round trip.
//
//   norm_tiles     one accumulator per tile (a slice of one segment), summed by a
//                  workgroup (GPUs) or by one invocation (CPU implementations)
//   norm_segments  per segment, its tiles' partials combined in a fixed order: by a
//                  workgroup for segments of many tiles, by one invocation for the rest
//   norm_global    one workgroup: combines every segment, writes NormStats and the clip
//                  coefficient the clip kernels read on the device
//
// Overflow safety: an accumulator holds an exponent E and sums of |x|·2^-E and (|x|·2^-E)²,
// where E grows (by powers of two, so exactly) whenever a larger |x| arrives. Elements of
// 1e25 or 1e-25 neither overflow nor underflow; an L2 norm that fits in f32 comes out finite.
// Non-finite elements are counted (NaN and ±inf apart) and kept out of the sums; the
// final norms turn NaN or inf from those counts, as IEEE arithmetic would.
// Determinism: the tile split and every reduction tree are fixed by the layout alone.

struct SegmentRange {
    first_partial: u32,
    partial_count: u32,
}

struct Params {
    segment_count: u32,
    kind: u32,          // 0 = L2, 1 = L1, 2 = L∞
    nonfinite: u32,     // a POLICY_* code
    clipping: u32,      // 1 when max_norm bounds the norm (global or per segment)
    max_norm: f32,
    eps: f32,
    big_segments: u32,  // leading entries of `order` reduced by a whole workgroup
    pad: u32,
}

// ---- stage 1: tiles -> partials ----------------------------------------------------

@group(0) @binding(0) var<storage, read> data4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> data1: array<f32>;
@group(0) @binding(2) var<storage, read> tiles: array<Tile>;
@group(0) @binding(3) var<storage, read_write> partials: array<Acc>;

fn finite(x: f32) -> bool {
    return (bitcast<u32>(x) & EXP_MASK) != EXP_MASK;
}

// Plain f32 sums (of at most 2,048 elements, one invocation's share of a tile: the host
// enforces MAX_INVOCATION_ELEMS) are as good as the rescaling ones when no sum overflowed
// (a sum of non-negative terms that overflows stays inf), no element was NaN or inf, and
// the largest |x| is at least 2^-40, so squares that flush to zero are below 2^-126 and
// weigh less than 2^11·2^-126/2^-80 = 2^-35 of the sum. Rounding: each element passes
// through at most 4 pairwise additions within its trip, 16 into the running block of
// trips and 2048/256 into the total, so a sum's relative error stays below 29·2^-24 ≈ 1.7e-6.
fn plain_sums_exact(sumsq: f32, abssum: f32, maxabs: f32) -> bool {
    return finite(sumsq) && finite(abssum) && (maxabs == 0.0 || maxabs >= 0x1p-40f);
}

// Plain sums as an accumulator at the exponent of their largest element.
fn normalized(sumsq: f32, abssum: f32, maxabs: f32) -> Acc {
    let biased = i32((bitcast<u32>(maxabs) >> 23u) & 0xffu);
    let e = clamp(biased - 126, MIN_EXP, MAX_EXP);
    // Two steps: ldexp is only defined for exponents up to 128.
    return Acc(e, ldexp(ldexp(sumsq, -e), -e), ldexp(abssum, -e), maxabs, 0u, 0u, 1.0, 0u);
}

// Sums elements first*4.. last*4 (vec4 indices first, first + stride, … below last).
// The fast path is one flat loop of plain sums, four loads a trip: on CPU implementations
// a trip's own bookkeeping costs about as much as a load, and a nested loop more. If a sum
// overflowed, an element was non-finite or the values fell towards subnormals, the share
// is summed again with the rescaling accumulator, which classifies every element.
fn sum_vec4s(first: u32, last: u32, stride: u32) -> Acc {
    // Two levels keep rounding chains short: a block of up to 16 trips, then the total.
    // The block is flushed with selects, not a branch: on CPU implementations a branch
    // in a loop costs mask bookkeeping on every trip.
    var sumsq = 0.0;
    var abssum = 0.0;
    var block_sq = 0.0;
    var block_abs = 0.0;
    var maxabs = 0.0;
    var trips = 0u;
    var i = first;
    for (; i + 3u * stride < last; i += 4u * stride) {
        let a = abs(data4[i]);
        let b = abs(data4[i + stride]);
        let c = abs(data4[i + 2u * stride]);
        let d = abs(data4[i + 3u * stride]);
        block_sq += (dot(a, a) + dot(b, b)) + (dot(c, c) + dot(d, d));
        let ab = a + b;
        let cd = c + d;
        block_abs += ((ab.x + ab.y) + (ab.z + ab.w)) + ((cd.x + cd.y) + (cd.z + cd.w));
        let m = max(max(a, b), max(c, d));
        maxabs = max(maxabs, max(max(m.x, m.y), max(m.z, m.w)));
        trips += 1u;
        let flush = (trips & 15u) == 0u;
        sumsq += select(0.0, block_sq, flush);
        abssum += select(0.0, block_abs, flush);
        block_sq = select(block_sq, 0.0, flush);
        block_abs = select(block_abs, 0.0, flush);
    }
    for (; i < last; i += stride) {
        let a = abs(data4[i]);
        block_sq += dot(a, a);
        block_abs += (a.x + a.y) + (a.z + a.w);
        maxabs = max(maxabs, max(max(a.x, a.y), max(a.z, a.w)));
    }
    sumsq += block_sq;
    abssum += block_abs;
    if (plain_sums_exact(sumsq, abssum, maxabs)) {
        return normalized(sumsq, abssum, maxabs);
    }
    // The rescaling accumulator, in blocks of 16 vec4s for the same short chains.
    var total = empty_acc();
    for (var j0 = first; j0 < last; j0 += 16u * stride) {
        var r = running_new();
        for (var j = j0; j < min(j0 + 16u * stride, last); j += stride) {
            add4(&r, data4[j]);
        }
        total = combine(total, to_acc(r));
    }
    return total;
}

// true: each invocation sums a tile of its own, contiguously, and writes its partial —
// no barrier, which on CPU implementations such as lavapipe costs a context switch per
// SIMD group. false (GPUs): a workgroup shares a tile, invocations strided for coalesced
// loads, and reduces it in shared memory.
override INVOCATION_TILES: bool = false;

@compute @workgroup_size(WG)
fn norm_tiles(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let g = workgroup_index(wid, groups);
    let t = select(g, g * WG + local, INVOCATION_TILES);
    let lane = select(local, 0u, INVOCATION_TILES);
    let stride = select(WG, 1u, INVOCATION_TILES);
    // With workgroup tiles `live` is uniform, as the barriers below need.
    let live = t < arrayLength(&tiles);
    var tile = Tile(0u, 0u, 0u, 0u); // empty: no trips below
    if (live) { tile = tiles[t]; }
    // The loops stay out of the `if`: on CPU implementations a loop inside control flow
    // pays for its masks on every trip.
    let s = span(tile);
    var mine = sum_vec4s(s.body_start / 4u + lane, s.body_end / 4u, stride);
    var edge = running_new();
    for (var e = lane; e < 6u; e += stride) {
        let j = edge_index(s, e);
        if (j < s.end) { add1(&edge, data1[j]); }
    }
    mine = combine(mine, to_acc(edge));
    if (!INVOCATION_TILES) {
        mine = reduce_workgroup(local, mine); // valid in invocation 0
    }
    if (live && (INVOCATION_TILES || local == 0u)) {
        partials[tile.partial] = mine;
    }
}

// ---- blocked folding --------------------------------------------------------------------

// Folds a stream of accumulators in four levels, each flushed into the next every 16
// items, so an item goes through at most 16·3 + n/4096 roundings rather than n, however
// many tiles a segment has. Fixed fields, no indexed array: GL drivers turn a dynamically
// indexed local array into chains of conditional copies that take seconds to compile.
struct Fold {
    l0: Acc,
    l1: Acc,  // sums of 16 items
    l2: Acc,  // sums of 256
    l3: Acc,  // sums of 4,096 and more
    count: u32,
}

fn fold_new() -> Fold {
    return Fold(empty_acc(), empty_acc(), empty_acc(), empty_acc(), 0u);
}

fn fold_add(f: ptr<function, Fold>, a: Acc) {
    (*f).l0 = combine((*f).l0, a);
    (*f).count += 1u;
    if (((*f).count & 15u) == 0u) {
        (*f).l1 = combine((*f).l1, (*f).l0);
        (*f).l0 = empty_acc();
        if (((*f).count & 255u) == 0u) {
            (*f).l2 = combine((*f).l2, (*f).l1);
            (*f).l1 = empty_acc();
            if (((*f).count & 4095u) == 0u) {
                (*f).l3 = combine((*f).l3, (*f).l2);
                (*f).l2 = empty_acc();
            }
        }
    }
}

fn fold_total(f: Fold) -> Acc {
    return combine(combine(f.l3, f.l2), combine(f.l1, f.l0));
}

// ---- stage 2: partials -> segments --------------------------------------------------

@group(0) @binding(0) var<storage, read> stage_partials: array<Acc>;
@group(0) @binding(1) var<storage, read> ranges: array<SegmentRange>;
@group(0) @binding(2) var<storage, read_write> segments: array<Acc>;
@group(0) @binding(3) var<storage, read_write> stats: array<u32>;
@group(0) @binding(4) var<uniform> params: Params;


struct Norms {
    l2: u32,
    l1: u32,
    linf: u32,
    chosen: u32,  // bits of the norm of params.kind
    finite_chosen: f32, // the same norm over finite elements only
}

fn norms_of(a: Acc) -> Norms {
    let unit = ldexp(1.0, a.exponent);
    var l2 = sqrt(a.sumsq) * unit;
    var l1 = a.abssum * unit;
    var linf = a.maxabs;
    let finite_chosen = select(select(linf, l1, params.kind == 1u), l2, params.kind == 0u);
    var bits = vec3(bitcast<u32>(l2), bitcast<u32>(l1), bitcast<u32>(linf));
    if (params.nonfinite != POLICY_ZERO) {
        if (a.nan > 0u) {
            bits = vec3(NAN_BITS);
        } else if (a.inf > 0u) {
            bits = vec3(INF_BITS);
        }
    }
    let chosen = select(select(bits.z, bits.y, params.kind == 1u), bits.x, params.kind == 0u);
    return Norms(bits.x, bits.y, bits.z, chosen, finite_chosen);
}

// The coefficient of one accumulator under params' max_norm (1 when not clipping).
fn clip_coef_bits(a: Acc, n: Norms) -> u32 {
    if (params.clipping == 0u) { return bitcast<u32>(1.0); }
    return clip_coef_for(params.max_norm, params.eps, params.nonfinite, a.nan, a.inf, n.finite_chosen);
}

// Segment indices: the `params.big_segments` of many partials first, then the rest.
@group(0) @binding(5) var<storage, read> order: array<u32>;

// Workgroups below params.big_segments reduce one segment of many partials each; every
// later workgroup takes WG of the other segments, one invocation each, with no barrier.
@compute @workgroup_size(WG)
fn norm_segments(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let w = workgroup_index(wid, groups);
    let big = w < params.big_segments; // uniform: a uniform-buffer value
    // A big segment's partials are strided over the workgroup; otherwise invocation k
    // folds all of segment order[k]'s. One fold loop serves both.
    let k = select(params.big_segments + (w - params.big_segments) * WG + local, w, big);
    let live = k < params.segment_count;
    let s = order[min(k, params.segment_count - 1u)];
    var range = SegmentRange(0u, 0u);
    if (live) { range = ranges[s]; }
    var folded = fold_new();
    for (var i = select(0u, local, big); i < range.partial_count; i += select(1u, WG, big)) {
        fold_add(&folded, stage_partials[range.first_partial + i]);
    }
    var total = fold_total(folded);
    if (big) {
        total = reduce_workgroup(local, total); // valid in invocation 0
    }
    if (live && (!big || local == 0u)) {
        finish_segment(s, total);
    }
}

// Writes segment `s`'s accumulator (with its clip coefficient) and its public norms.
fn finish_segment(s: u32, acc: Acc) {
    var total = acc;
    let n = norms_of(total);
    total.coef = bitcast<f32>(clip_coef_bits(total, n));
    segments[s] = total;
    let base = HEADER_WORDS + s * SEGMENT_WORDS;
    stats[base + S_L2] = n.l2;
    stats[base + S_L1] = n.l1;
    stats[base + S_LINF] = n.linf;
    stats[base + S_NONFINITE] = total.nan + total.inf;
}

// ---- stage 3: segments -> global ----------------------------------------------------

var<workgroup> shared_first: array<u32, MAX_WG>;

@compute @workgroup_size(WG)
fn norm_global(@builtin(local_invocation_index) local: u32) {
    var folded = fold_new();
    var first = NO_SEGMENT;
    for (var s = local; s < params.segment_count; s += WG) {
        let seg = segments[s];
        fold_add(&folded, seg);
        if (seg.nan + seg.inf > 0u) { first = min(first, s); }
    }
    shared_first[local] = first;
    let total = reduce_workgroup(local, fold_total(folded));
    // reduce_workgroup's barriers made every shared_first visible.
    if (local == 0u) {
        for (var i = 1u; i < WG; i++) { first = min(first, shared_first[i]); }
    }
    if (local == 0u) {
        let n = norms_of(total);
        let nonfinite = total.nan + total.inf;
        stats[H_NORM] = n.chosen;
        stats[H_COEF] = clip_coef_bits(total, n);
        // A norm beyond f32 from finite elements is as unusable as a NaN: skip it too.
        let unusable = nonfinite > 0u || (n.chosen & EXP_MASK) == EXP_MASK;
        // Under Error the first unusable step halts the run on the device: this step and
        // every later one are skipped (the buffer keeps the word; the host clears it), so
        // a stop read LAG steps later still leaves the state as that step found it.
        let halted = params.nonfinite == POLICY_ERROR && (unusable || stats[H_HALTED] != 0u);
        stats[H_HALTED] = select(0u, 1u, halted);
        stats[H_SKIP] = select(0u, 1u, halted || (unusable && params.nonfinite == POLICY_SKIP));
        stats[H_NONFINITE] = nonfinite;
        stats[H_NAN] = total.nan;
        stats[H_INF] = total.inf;
        stats[H_FIRST_NONFINITE] = first;
        stats[H_L2] = n.l2;
        stats[H_L1] = n.l1;
        stats[H_LINF] = n.linf;
        stats[H_SEGMENTS] = params.segment_count;
        stats[H_FINITE_NORM] = bitcast<u32>(n.finite_chosen);
        stats[H_LIMIT] = select(INF_BITS, bitcast<u32>(params.max_norm), params.clipping != 0u);
    }
}
