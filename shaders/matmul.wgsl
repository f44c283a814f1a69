// C = op(A)·op(B) (+ bias broadcast over rows) (+ C itself when accumulating), all f32,
// row-major, op(X) = X or Xᵀ. op(A) is [m, k], op(B) is [k, n], C is [m, n]; A is stored
// [m, k] or, transposed, [k, m]; B is stored [k, n] or, transposed, [n, k]. One kernel thus
// serves Linear forward (x·Wᵀ + b), its input gradient (dY·W) and weight gradient (dYᵀ·X).

struct Shape {
    m: u32,
    n: u32,
    k: u32,
    flags: u32,
}

const TRANS_A: u32 = 1u;
const TRANS_B: u32 = 2u;
const BIAS: u32 = 4u;
const ACCUMULATE: u32 = 8u;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<uniform> shape: Shape;

// Tiled kernel: a workgroup of WG_M x WG_N threads computes a (WG_M·TM) x (WG_N·TN) tile of C,
// each thread a TM x TN register block, stepping through k TILE_K at a time via
// workgroup memory. TN is 4 so that a thread's row of outputs is one vec4.
override WG_M: u32 = 16u;
override WG_N: u32 = 16u;
override TILE_K: u32 = 16u;
const TM: u32 = 4u;
const TN: u32 = 4u;

var<workgroup> tile_a: array<f32, TILE_K * WG_M * TM>; // [TILE_K][BM]
var<workgroup> tile_b: array<f32, TILE_K * WG_N * TN>; // [TILE_K][BN]

fn has(flag: u32) -> bool {
    return (shape.flags & flag) != 0u;
}

// op(A)[row, kk], 0 outside the matrix (so partial tiles need no special case).
fn load_a(row: u32, kk: u32) -> f32 {
    if (row >= shape.m || kk >= shape.k) { return 0.0; }
    if (has(TRANS_A)) { return a[kk * shape.m + row]; }
    return a[row * shape.k + kk];
}

// op(B)[kk, col], 0 outside the matrix.
fn load_b(kk: u32, col: u32) -> f32 {
    if (kk >= shape.k || col >= shape.n) { return 0.0; }
    if (has(TRANS_B)) { return b[col * shape.k + kk]; }
    return b[kk * shape.n + col];
}

// The value stored at C[row, col] for the product `sum`.
fn epilogue(row: u32, col: u32, sum: f32) -> f32 {
    var v = sum;
    if (has(BIAS)) { v += bias[col]; }
    if (has(ACCUMULATE)) { v += c[row * shape.n + col]; }
    return v;
}

@compute @workgroup_size(WG_N, WG_M)
fn matmul_tiled(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let bm = WG_M * TM;
    let bn = WG_N * TN;
    let tiles_n = (shape.n + bn - 1u) / bn;
    let t = wid.y * groups.x + wid.x;
    if (t >= tiles_n * ((shape.m + bm - 1u) / bm)) { return; }
    let row0 = (t / tiles_n) * bm;
    let col0 = (t % tiles_n) * bn;
    let threads = WG_M * WG_N;

    var acc: array<vec4<f32>, TM>;
    for (var k0 = 0u; k0 < shape.k; k0 += TILE_K) {
        // Consecutive threads read consecutive addresses of each operand as it is stored.
        for (var i = local; i < TILE_K * bm; i += threads) {
            var r = i / TILE_K;
            var kk = i % TILE_K;
            if (has(TRANS_A)) { r = i % bm; kk = i / bm; }
            tile_a[kk * bm + r] = load_a(row0 + r, k0 + kk);
        }
        for (var i = local; i < TILE_K * bn; i += threads) {
            var col = i % bn;
            var kk = i / bn;
            if (has(TRANS_B)) { col = i / TILE_K; kk = i % TILE_K; }
            tile_b[kk * bn + col] = load_b(k0 + kk, col0 + col);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let bo = kk * bn + lid.x * TN;
            let bv = vec4(tile_b[bo], tile_b[bo + 1u], tile_b[bo + 2u], tile_b[bo + 3u]);
            let ao = kk * bm + lid.y * TM;
            for (var r = 0u; r < TM; r++) {
                acc[r] += tile_a[ao + r] * bv;
            }
        }
        workgroupBarrier();
    }
    for (var r = 0u; r < TM; r++) {
        let row = row0 + lid.y * TM + r;
        for (var j = 0u; j < TN; j++) {
            let col = col0 + lid.x * TN + j;
            if (row < shape.m && col < shape.n) {
                c[row * shape.n + col] = epilogue(row, col, acc[r][j]);
            }
        }
    }
}

// The baseline the benchmark compares against: one thread per output, no reuse.
@compute @workgroup_size(256)
fn matmul_naive(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = (wid.y * groups.x + wid.x) * 256u + local;
    if (i >= shape.m * shape.n) { return; }
    let row = i / shape.n;
    let col = i % shape.n;
    var sum = 0.0;
    for (var kk = 0u; kk < shape.k; kk++) {
        sum += load_a(row, kk) * load_b(kk, col);
    }
    c[i] = epilogue(row, col, sum);
}

// Bias gradient: c[col] (+)= Σ_row a[row, col] for a = dY of shape [m, n]. One thread per
// column, rows in order: adjacent threads read adjacent addresses, and the sum is deterministic.
@compute @workgroup_size(256)
fn bias_grad(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let col = (wid.y * groups.x + wid.x) * 256u + local;
    if (col >= shape.n) { return; }
    var sum = 0.0;
    for (var row = 0u; row < shape.m; row++) {
        sum += a[row * shape.n + col];
    }
    if (has(ACCUMULATE)) { sum += c[col]; }
    c[col] = sum;
}
