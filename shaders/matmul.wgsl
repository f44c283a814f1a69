// C = op(A)·op(B) (+ bias broadcast over rows) (+ C itself when accumulating), all f32,
// row-major, op(X) = X or Xᵀ. op(A) is [m, k], op(B) is [k, n], C is [m, n]; A is stored
// [m, k] or, transposed, [k, m]; B is stored [k, n] or, transposed, [n, k]. One kernel thus
// serves Linear forward (x·Wᵀ + b), its input gradient (dY·W) and weight gradient (dYᵀ·X).
//
// Fused epilogues (act.wgsl) make a Linear layer one dispatch each way:
//   ACT_OUT    aux = act(C) as well: product + bias + activation (C keeps the pre-activation)
//   ACT_GRAD   C = grad_through(act, C, aux): the input gradient times the derivative of the
//              activation below, aux holding that activation's input
//   BIAS_GRAD  aux[row] = Σ_k op(A)[row, k] as well: the bias gradient beside the weight
//              gradient dYᵀ·X, summed from the op(A) blocks the product loads anyway by
//              the threads of the first column of C

struct Shape {
    m: u32,
    n: u32,
    k: u32,
    flags: u32,
    act: u32,   // act.wgsl's kind, for ACT_OUT and ACT_GRAD
    slope: f32, // leaky relu's negative slope
}

const FLAG_TRANS_A: u32 = 1u;
const FLAG_TRANS_B: u32 = 2u;
const FLAG_BIAS: u32 = 4u;
const FLAG_ACCUMULATE: u32 = 8u;
const FLAG_ACT_OUT: u32 = 16u;
const FLAG_ACT_GRAD: u32 = 32u;
const FLAG_BIAS_GRAD: u32 = 64u;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
// Read-only storage, not a uniform: lavapipe (Mesa 22.3) inlines uniform values into a new
// shader variant per dispatch when they steer loops, which leaked ~650 KB a dispatch and
// cost a compile each time (see BENCHMARKS.md).
@group(0) @binding(4) var<storage, read> shape_in: Shape;
// A and B again, 4 floats at a time (bound only where VEC_A / VEC_B hold).
@group(0) @binding(5) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> b4: array<vec4<f32>>;
// The fused epilogues' second operand: [m, n] for ACT_OUT and ACT_GRAD, [m] for BIAS_GRAD.
@group(0) @binding(7) var<storage, read_write> aux: array<f32>;

// The tiled kernels are specialized per pipeline: transposes and vector loads are
// constants, so each combination compiles to code without run-time branches on them.
override TRANS_A: bool = false;
override TRANS_B: bool = false;
// Read the operand as vec4 along its contiguous dimension, which must then be a multiple
// of 4: op(A) along k (along m when TRANS_A), op(B) along n (along k when TRANS_B).
override VEC_A: bool = false;
override VEC_B: bool = false;
// A workgroup is WG_M x WG_N threads; matmul_tiled steps through k TILE_K at a time.
override WG_M: u32 = 16u;
override WG_N: u32 = 16u;
override TILE_K: u32 = 16u;

// The shape as private values, set once by each entry point: on CPU implementations every
// storage load is a loop over the lanes, and the shape is read in the innermost loops.
var<private> shape: Shape;

fn load_shape() {
    shape = shape_in;
}

fn has(flag: u32) -> bool {
    return (shape.flags & flag) != 0u;
}


// op(A)[row, kk], 0 outside the matrix (so partial tiles need no special case).
fn load_a(row: u32, kk: u32, trans: bool) -> f32 {
    if (row >= shape.m || kk >= shape.k) { return 0.0; }
    if (trans) { return a[kk * shape.m + row]; }
    return a[row * shape.k + kk];
}

// op(B)[kk, col], 0 outside the matrix.
fn load_b(kk: u32, col: u32, trans: bool) -> f32 {
    if (kk >= shape.k || col >= shape.n) { return 0.0; }
    if (trans) { return b[col * shape.k + kk]; }
    return b[kk * shape.n + col];
}

// op(A)[row, kk..kk+4], or op(A)[row..row+4, kk] when TRANS_A; 0 outside. The vector
// index is a multiple of 4 and its dimension too, so the vector is wholly in or out.
fn vec_a(row: u32, kk: u32) -> vec4<f32> {
    if (row >= shape.m || kk >= shape.k) { return vec4(0.0); }
    if (TRANS_A) { return a4[(kk * shape.m + row) / 4u]; }
    return a4[(row * shape.k + kk) / 4u];
}

// op(B)[kk, col..col+4], or op(B)[kk..kk+4, col] when TRANS_B; 0 outside.
fn vec_b(kk: u32, col: u32) -> vec4<f32> {
    if (kk >= shape.k || col >= shape.n) { return vec4(0.0); }
    if (TRANS_B) { return b4[(col * shape.k + kk) / 4u]; }
    return b4[(kk * shape.n + col) / 4u];
}

// Stores the product `sum` at C[row, col] through the epilogue.
fn store(row: u32, col: u32, sum: f32) {
    var v = sum;
    let at = row * shape.n + col;
    if (has(FLAG_BIAS)) { v += bias[col]; }
    if (has(FLAG_ACCUMULATE)) { v += c[at]; }
    if (has(FLAG_ACT_GRAD)) { v = grad_through(shape.act, shape.slope, v, aux[at]); }
    c[at] = v;
    if (has(FLAG_ACT_OUT)) { aux[at] = activate(shape.act, shape.slope, v); }
}

// Stores C[row, col..col+4] from `v`, skipping what lies outside C.
fn store_row(row: u32, col: u32, v: vec4<f32>) {
    if (row >= shape.m) { return; }
    if (col < shape.n) { store(row, col, v.x); }
    if (col + 1u < shape.n) { store(row, col + 1u, v.y); }
    if (col + 2u < shape.n) { store(row, col + 2u, v.z); }
    if (col + 3u < shape.n) { store(row, col + 3u, v.w); }
}

// BIAS_GRAD: the row sum of op(A) for `row`, stored by the thread of C's first column.
fn store_row_sum(row: u32, col: u32, sum: f32) {
    if (!has(FLAG_BIAS_GRAD) || col != 0u || row >= shape.m) { return; }
    var v = sum;
    if (has(FLAG_ACCUMULATE)) { v += aux[row]; }
    aux[row] = v;
}

fn store_row_sums(row0: u32, col0: u32, sums: vec4<f32>) {
    store_row_sum(row0, col0, sums.x);
    store_row_sum(row0 + 1u, col0, sums.y);
    store_row_sum(row0 + 2u, col0, sums.z);
    store_row_sum(row0 + 3u, col0, sums.w);
}

// The first row and column of the C tile of workgroup `t` (tiles of bm x bn, row-major),
// or m when `t` is past the last tile (the grid overshoots).
fn tile_origin(t: u32, bm: u32, bn: u32) -> vec2<u32> {
    let tiles_n = (shape.n + bn - 1u) / bn;
    if (t >= tiles_n * ((shape.m + bm - 1u) / bm)) { return vec2(shape.m, 0u); }
    return vec2((t / tiles_n) * bm, (t % tiles_n) * bn);
}

// ---- matmul_tiled: operand tiles shared through workgroup memory (GPUs) ----------------
// A workgroup of WG_M x WG_N threads computes a 4·WG_M x 4·WG_N tile of C, each thread a
// 4 x 4 register block, stepping through k TILE_K at a time. Each tile holds vec4s so that
// a thread reads its 4 rows of op(A) and 4 columns of op(B) at one k in two loads.

// tile_a[kk * WG_M + i][j] = op(A)[row0 + 4i + j, k0 + kk]
var<workgroup> tile_a: array<vec4<f32>, TILE_K * WG_M>;
// tile_b[kk * WG_N + i][j] = op(B)[k0 + kk, col0 + 4i + j]
var<workgroup> tile_b: array<vec4<f32>, TILE_K * WG_N>;

// Copies op(A)[row0.., k0..] and op(B)[k0.., col0..] into the tiles, reading each
// operand along its contiguous dimension (vec4 where VEC_A / VEC_B allow).
fn stage_tiles(local: u32, row0: u32, col0: u32, k0: u32) {
    let threads = WG_M * WG_N;
    let bm = 4u * WG_M;
    let bn = 4u * WG_N;
    let k4 = TILE_K / 4u; // VEC along k needs TILE_K % 4 == 0 (the host checks)
    if (VEC_A && TRANS_A) {
        for (var u = local; u < TILE_K * WG_M; u += threads) {
            tile_a[u] = vec_a(row0 + 4u * (u % WG_M), k0 + u / WG_M);
        }
    } else if (VEC_A) {
        for (var u = local; u < bm * k4; u += threads) {
            let r = u / k4;
            let q = u % k4;
            let v = vec_a(row0 + r, k0 + 4u * q);
            let at = 4u * q * WG_M + r / 4u;
            let j = r % 4u;
            tile_a[at][j] = v.x;
            tile_a[at + WG_M][j] = v.y;
            tile_a[at + 2u * WG_M][j] = v.z;
            tile_a[at + 3u * WG_M][j] = v.w;
        }
    } else {
        for (var u = local; u < TILE_K * bm; u += threads) {
            var r = u / TILE_K;
            var kk = u % TILE_K;
            if (TRANS_A) { r = u % bm; kk = u / bm; }
            tile_a[kk * WG_M + r / 4u][r % 4u] = load_a(row0 + r, k0 + kk, TRANS_A);
        }
    }
    if (VEC_B && !TRANS_B) {
        for (var u = local; u < TILE_K * WG_N; u += threads) {
            tile_b[u] = vec_b(k0 + u / WG_N, col0 + 4u * (u % WG_N));
        }
    } else if (VEC_B) {
        for (var u = local; u < bn * k4; u += threads) {
            let col = u / k4;
            let q = u % k4;
            let v = vec_b(k0 + 4u * q, col0 + col);
            let at = 4u * q * WG_N + col / 4u;
            let j = col % 4u;
            tile_b[at][j] = v.x;
            tile_b[at + WG_N][j] = v.y;
            tile_b[at + 2u * WG_N][j] = v.z;
            tile_b[at + 3u * WG_N][j] = v.w;
        }
    } else {
        // Consecutive threads read consecutive addresses of B as it is stored.
        for (var u = local; u < TILE_K * bn; u += threads) {
            var col = u % bn;
            var kk = u / bn;
            if (TRANS_B) { col = u / TILE_K; kk = u % TILE_K; }
            tile_b[kk * WG_N + col / 4u][col % 4u] = load_b(k0 + kk, col0 + col, TRANS_B);
        }
    }
}

@compute @workgroup_size(WG_N, WG_M)
fn matmul_tiled(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    load_shape();
    let origin = tile_origin(wid.y * groups.x + wid.x, 4u * WG_M, 4u * WG_N);
    if (origin.x >= shape.m) { return; } // uniform per workgroup: no barrier is skipped by half
    var acc0 = vec4(0.0);
    var acc1 = vec4(0.0);
    var acc2 = vec4(0.0);
    var acc3 = vec4(0.0);
    var row_sums = vec4(0.0);
    for (var k0 = 0u; k0 < shape.k; k0 += TILE_K) {
        stage_tiles(local, origin.x, origin.y, k0);
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let av = tile_a[kk * WG_M + lid.y];
            let bv = tile_b[kk * WG_N + lid.x];
            acc0 += av.x * bv;
            acc1 += av.y * bv;
            acc2 += av.z * bv;
            acc3 += av.w * bv;
            row_sums += av;
        }
        workgroupBarrier();
    }
    let row = origin.x + 4u * lid.y;
    let col = origin.y + 4u * lid.x;
    store_row_sums(row, col, row_sums);
    store_row(row, col, acc0);
    store_row(row + 1u, col, acc1);
    store_row(row + 2u, col, acc2);
    store_row(row + 3u, col, acc3);
}

// ---- matmul_direct: no workgroup memory (CPU adapters) ---------------------------------
// Each thread computes an 8 x 8 block of C, reading 4 x 4 blocks of op(A) and op(B)
// straight from the buffers; a CPU's caches do the sharing, and there is no barrier (on
// lavapipe a barrier turns every invocation into a coroutine, which costs more than the
// loads it saves). A workgroup covers 8·WG_M x 8·WG_N outputs.

// op(A)[row0..row0+4, k0..k0+4] as a matrix whose column q is op(A)[row0.., k0 + q].
fn block_a(row0: u32, k0: u32) -> mat4x4<f32> {
    if (VEC_A && TRANS_A) {
        return mat4x4(vec_a(row0, k0), vec_a(row0, k0 + 1u), vec_a(row0, k0 + 2u), vec_a(row0, k0 + 3u));
    }
    if (VEC_A) {
        return transpose(mat4x4(vec_a(row0, k0), vec_a(row0 + 1u, k0), vec_a(row0 + 2u, k0), vec_a(row0 + 3u, k0)));
    }
    let t = TRANS_A;
    return mat4x4(
        vec4(load_a(row0, k0, t), load_a(row0 + 1u, k0, t), load_a(row0 + 2u, k0, t), load_a(row0 + 3u, k0, t)),
        vec4(load_a(row0, k0 + 1u, t), load_a(row0 + 1u, k0 + 1u, t), load_a(row0 + 2u, k0 + 1u, t), load_a(row0 + 3u, k0 + 1u, t)),
        vec4(load_a(row0, k0 + 2u, t), load_a(row0 + 1u, k0 + 2u, t), load_a(row0 + 2u, k0 + 2u, t), load_a(row0 + 3u, k0 + 2u, t)),
        vec4(load_a(row0, k0 + 3u, t), load_a(row0 + 1u, k0 + 3u, t), load_a(row0 + 2u, k0 + 3u, t), load_a(row0 + 3u, k0 + 3u, t)),
    );
}

// op(B)[k0..k0+4, col0..col0+4] as a matrix whose column j is op(B)[k0.., col0 + j].
fn block_b(k0: u32, col0: u32) -> mat4x4<f32> {
    if (VEC_B && TRANS_B) {
        return mat4x4(vec_b(k0, col0), vec_b(k0, col0 + 1u), vec_b(k0, col0 + 2u), vec_b(k0, col0 + 3u));
    }
    if (VEC_B) {
        return transpose(mat4x4(vec_b(k0, col0), vec_b(k0 + 1u, col0), vec_b(k0 + 2u, col0), vec_b(k0 + 3u, col0)));
    }
    let t = TRANS_B;
    return mat4x4(
        vec4(load_b(k0, col0, t), load_b(k0 + 1u, col0, t), load_b(k0 + 2u, col0, t), load_b(k0 + 3u, col0, t)),
        vec4(load_b(k0, col0 + 1u, t), load_b(k0 + 1u, col0 + 1u, t), load_b(k0 + 2u, col0 + 1u, t), load_b(k0 + 3u, col0 + 1u, t)),
        vec4(load_b(k0, col0 + 2u, t), load_b(k0 + 1u, col0 + 2u, t), load_b(k0 + 2u, col0 + 2u, t), load_b(k0 + 3u, col0 + 2u, t)),
        vec4(load_b(k0, col0 + 3u, t), load_b(k0 + 1u, col0 + 3u, t), load_b(k0 + 2u, col0 + 3u, t), load_b(k0 + 3u, col0 + 3u, t)),
    );
}

// Stores the 4 x 4 block `acc` (column j is C[row0.., col0 + j]) at C[row0.., col0..].
fn store_block(row0: u32, col0: u32, acc: mat4x4<f32>) {
    let rows = transpose(acc);
    store_row(row0, col0, rows[0]);
    store_row(row0 + 1u, col0, rows[1]);
    store_row(row0 + 2u, col0, rows[2]);
    store_row(row0 + 3u, col0, rows[3]);
}

@compute @workgroup_size(WG_N, WG_M)
fn matmul_direct(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    load_shape();
    let origin = tile_origin(wid.y * groups.x + wid.x, 8u * WG_M, 8u * WG_N);
    if (origin.x >= shape.m) { return; }
    let row0 = origin.x + 8u * lid.y;
    let col0 = origin.y + 8u * lid.x;
    // Separate variables, not an array: dynamically indexed arrays live in memory on CPUs.
    var c00 = mat4x4<f32>();
    var c01 = mat4x4<f32>();
    var c10 = mat4x4<f32>();
    var c11 = mat4x4<f32>();
    var sums0 = vec4(0.0);
    var sums1 = vec4(0.0);
    for (var k0 = 0u; k0 < shape.k; k0 += 4u) {
        let b0 = block_b(k0, col0);
        let b1 = block_b(k0, col0 + 4u);
        let a0 = block_a(row0, k0);
        let a1 = block_a(row0 + 4u, k0);
        c00 += a0 * b0;
        c01 += a0 * b1;
        c10 += a1 * b0;
        c11 += a1 * b1;
        sums0 += a0 * vec4(1.0);
        sums1 += a1 * vec4(1.0);
    }
    store_row_sums(row0, col0, sums0);
    store_row_sums(row0 + 4u, col0, sums1);
    store_block(row0, col0, c00);
    store_block(row0, col0 + 4u, c01);
    store_block(row0 + 4u, col0, c10);
    store_block(row0 + 4u, col0 + 4u, c11);
}

// ---- the baseline ----------------------------------------------------

// The baseline the benchmark compares against: one thread per output, no reuse, the
// transposes read from the shape's flags at run time.
@compute @workgroup_size(256)
fn matmul_naive(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    load_shape();
    let i = (wid.y * groups.x + wid.x) * 256u + local;
    if (i >= shape.m * shape.n) { return; }
    let row = i / shape.n;
    let col = i % shape.n;
    let trans_a = has(FLAG_TRANS_A);
    let trans_b = has(FLAG_TRANS_B);
    var sum = 0.0;
    var row_sum = 0.0;
    for (var kk = 0u; kk < shape.k; kk++) {
        let a = load_a(row, kk, trans_a);
        sum += a * load_b(kk, col, trans_b);
        row_sum += a;
    }
    store(row, col, sum);
    store_row_sum(row, col, row_sum);
}
