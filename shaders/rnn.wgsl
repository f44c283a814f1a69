// A vanilla RNN, h_t = act(W_x·x_t + b + W_h·h_{t-1}) from h_{-1} = 0, over the whole
// sequence in one dispatch each way (torch.nn.RNN with one layer, one bias). The forward
// computes the input projection as it goes (a product of k = inputs on its own cost more
// than the whole recurrence on lavapipe); the weight gradients of backpropagation through
// time are single products over all T·B rows (matmul.wgsl).
//
// Two layouts, as the norm has (the host picks by device type):
//   rnn_forward / rnn_backward        (GPUs) one workgroup per sequence, its invocations
//       sharing the hidden units; h_{t-1} is read from storage after a storage barrier
//       (WGSL has no grid-wide barrier, and storage has no size limit: any hidden size).
//   rnn_forward_seq / rnn_backward_seq (CPU implementations) one invocation per sequence,
//       all its units in turn, with no barrier at all: on lavapipe a barrier suspends and
//       resumes every SIMD group, which cost more than the arithmetic. Lanes then hold
//       different sequences, so W_h's addresses are the same in every lane (one load,
//       broadcast) and only the state's differ.
// A dispatch covers the steps [t_begin, t_end): all of them on GPUs; on lavapipe as many as
// its loop limiter allows (Mesa 22.3 silently ends every loop of an invocation after 65,535
// trips in all), the host cutting the sequence into chunks.
//
// Layouts, row-major; pre and hs are read four floats at a time where H is a multiple of 4
// (VEC), so the host sizes them in whole vec4s:
//   x    [T, B, I]     the inputs
//   pre  [T, B, H]     forward: receives the pre-activations z_t; backward: z_t on entry,
//                      dL/dz_t on exit (in place: step t reads z_t and writes dL/dz_t of the
//                      same unit), which the weight-gradient products read
//   hs   [T + 1, B, H] hs[0] = 0 (never written), hs[t + 1] = h_t
//   edge [B, H]        forward: h_{T-1} (the layer's output); backward: its gradient

struct RnnShape {
    batch: u32,
    hidden: u32,
    steps: u32,
    act: u32,     // act.wgsl's kind
    slope: f32,   // leaky relu's negative slope
    t_begin: u32, // the steps this dispatch covers
    t_end: u32,
    inputs: u32,
}

override WG: u32 = 64u;
// H is a multiple of 4: rows of W_h, pre and hs are read as vec4.
override VEC: bool = false;

// W_h [H, H], W_h[j, k] at j·H + k, in whole vec4s.
@group(0) @binding(0) var<storage, read> w_h4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> shape: RnnShape;
@group(0) @binding(2) var<storage, read_write> pre: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> hs: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> edge: array<f32>;
// The forward's inputs and input weights (placeholders in the backward).
@group(0) @binding(5) var<storage, read> x: array<f32>;
@group(0) @binding(6) var<storage, read> w_x: array<f32>; // [H, I]
@group(0) @binding(7) var<storage, read> bias: array<f32>; // [H]

fn w_h(i: u32) -> f32 { return w_h4[i / 4u][i % 4u]; }

// b_j + W_x[j, :]·x_t for the sequence whose step-t input row starts at `x0`.
fn projection(j: u32, x0: u32) -> f32 {
    var z = bias[j];
    for (var i = 0u; i < shape.inputs; i++) {
        z += w_x[j * shape.inputs + i] * x[x0 + i];
    }
    return z;
}

fn pre_at(i: u32) -> f32 { return pre[i / 4u][i % 4u]; }
fn set_pre(i: u32, v: f32) { pre[i / 4u][i % 4u] = v; }
fn hs_at(i: u32) -> f32 { return hs[i / 4u][i % 4u]; }
fn set_hs(i: u32, v: f32) { hs[i / 4u][i % 4u] = v; }

// The first sequence of workgroup `wid`'s `per_group`, or B past the last.
fn first_sequence(wid: vec3<u32>, groups: vec3<u32>, per_group: u32) -> u32 {
    return min((wid.y * groups.x + wid.x) * per_group, shape.batch);
}

// z_t[j] = P_t[j] + W_h[j, :]·h_{t-1} for the sequence whose step-t row starts at `row`
// (hs[t] holds h_{t-1}); stores z_t[j] and h_t[j].
fn forward_unit(t: u32, row: u32, b: u32, j: u32) {
    let H = shape.hidden;
    var z = projection(j, (t * shape.batch + b) * shape.inputs);
    if (t > 0u && VEC) {
        var acc = vec4(0.0);
        for (var k = 0u; k < H / 4u; k++) {
            acc += w_h4[j * (H / 4u) + k] * hs[row / 4u + k];
        }
        z += (acc.x + acc.y) + (acc.z + acc.w);
    } else if (t > 0u) {
        for (var k = 0u; k < H; k++) {
            z += w_h(j * H + k) * hs_at(row + k);
        }
    }
    set_pre(row + j, z);
    let h = activate(shape.act, shape.slope, z);
    set_hs(row + shape.batch * H + j, h);
    if (t + 1u == shape.steps) { edge[b * H + j] = h; }
}

// dL/dz_t for units 4q..4q+4 (VEC) of the sequence whose step-t row starts at `row`:
// dL/dh_t is the layer's output gradient at the last step, else W_h[:, 4q..]ᵀ·dL/dz_{t+1},
// a row of W_h's four columns a loop trip.
fn backward_units4(t: u32, row: u32, b: u32, q: u32) {
    let H = shape.hidden;
    var g = vec4(0.0);
    if (t + 1u == shape.steps) {
        let e = b * H + 4u * q;
        g = vec4(edge[e], edge[e + 1u], edge[e + 2u], edge[e + 3u]);
    } else {
        let next = row + shape.batch * H;
        for (var i = 0u; i < H; i++) {
            g += w_h4[i * (H / 4u) + q] * pre_at(next + i);
        }
    }
    let z = pre[row / 4u + q];
    let a = shape.act;
    let s = shape.slope;
    pre[row / 4u + q] = vec4(grad_through(a, s, g.x, z.x), grad_through(a, s, g.y, z.y), grad_through(a, s, g.z, z.z), grad_through(a, s, g.w, z.w));
}

// The same for one unit j, any H.
fn backward_unit(t: u32, row: u32, b: u32, j: u32) {
    let H = shape.hidden;
    var g = 0.0;
    if (t + 1u == shape.steps) {
        g = edge[b * H + j];
    } else {
        let next = row + shape.batch * H;
        for (var i = 0u; i < H; i++) {
            g += w_h(i * H + j) * pre_at(next + i);
        }
    }
    set_pre(row + j, grad_through(shape.act, shape.slope, g, pre_at(row + j)));
}

// The invocation layout's VEC path: units 4q..4q+4 of two adjacent sequences b and b + 1
// (`two`; else b alone) at once. Each vec4 of W_h, the same in every lane, is loaded once
// for both sequences, and each vec4 of a sequence's state once for four units: on lavapipe
// every load is a loop over the lanes, so loads per multiply-add are what cost.

// Stores z_t, h_t (and at the last step the layer's output) for units 4q.. of sequence b.
fn store_forward4(t: u32, b: u32, row: u32, q: u32, z: vec4<f32>) {
    pre[row / 4u + q] = z;
    let a = shape.act;
    let s = shape.slope;
    let h = vec4(activate(a, s, z.x), activate(a, s, z.y), activate(a, s, z.z), activate(a, s, z.w));
    hs[(row + shape.batch * shape.hidden) / 4u + q] = h;
    if (t + 1u == shape.steps) {
        let e = b * shape.hidden + 4u * q;
        edge[e] = h.x;
        edge[e + 1u] = h.y;
        edge[e + 2u] = h.z;
        edge[e + 3u] = h.w;
    }
}

fn forward_units4(t: u32, b: u32, q: u32, two: bool) {
    let H = shape.hidden;
    let H4 = H / 4u;
    let I = shape.inputs;
    let j = 4u * q;
    let row0 = (t * shape.batch + b) * H;
    let row1 = select(row0, row0 + H, two); // the second sequence, or the first again
    let x0 = (t * shape.batch + b) * I;
    let x1 = select(x0, x0 + I, two);
    var z0 = vec4(bias[j], bias[j + 1u], bias[j + 2u], bias[j + 3u]);
    var z1 = z0;
    for (var i = 0u; i < I; i++) {
        let w = vec4(w_x[j * I + i], w_x[(j + 1u) * I + i], w_x[(j + 2u) * I + i], w_x[(j + 3u) * I + i]);
        z0 += w * x[x0 + i];
        z1 += w * x[x1 + i];
    }
    if (t > 0u) {
        // Column c of a0 (a1): unit 4q + c's partial sums for the first (second) sequence.
        var a0 = mat4x4<f32>();
        var a1 = mat4x4<f32>();
        for (var k = 0u; k < H4; k++) {
            let w = 4u * q * H4 + k;
            let w0 = w_h4[w];
            let w1 = w_h4[w + H4];
            let w2 = w_h4[w + 2u * H4];
            let w3 = w_h4[w + 3u * H4];
            let h0 = hs[row0 / 4u + k];
            let h1 = hs[row1 / 4u + k];
            a0 += mat4x4(w0 * h0, w1 * h0, w2 * h0, w3 * h0);
            a1 += mat4x4(w0 * h1, w1 * h1, w2 * h1, w3 * h1);
        }
        z0 += vec4(1.0) * a0;
        z1 += vec4(1.0) * a1;
    }
    store_forward4(t, b, row0, q, z0);
    if (two) { store_forward4(t, b + 1u, row1, q, z1); }
}

fn grad_through4(g: vec4<f32>, z: vec4<f32>) -> vec4<f32> {
    let a = shape.act;
    let s = shape.slope;
    return vec4(grad_through(a, s, g.x, z.x), grad_through(a, s, g.y, z.y), grad_through(a, s, g.z, z.z), grad_through(a, s, g.w, z.w));
}

fn edge4(b: u32, q: u32) -> vec4<f32> {
    let e = b * shape.hidden + 4u * q;
    return vec4(edge[e], edge[e + 1u], edge[e + 2u], edge[e + 3u]);
}

// dL/dz_t for units 4q..4q+4 of sequences b (and b + 1): dL/dh_t is the layer's output
// gradient at the last step, else W_h[:, 4q..]ᵀ·dL/dz_{t+1}.
fn backward_units4_rows(t: u32, b: u32, q: u32, two: bool) {
    let H = shape.hidden;
    let H4 = H / 4u;
    let row0 = (t * shape.batch + b) * H;
    let row1 = select(row0, row0 + H, two);
    var g0 = vec4(0.0);
    var g1 = vec4(0.0);
    if (t + 1u == shape.steps) {
        g0 = edge4(b, q);
        g1 = edge4(select(b, b + 1u, two), q);
    } else {
        let next = shape.batch * H;
        for (var i = 0u; i < H4; i++) {
            let w = 4u * i * H4 + q;
            let w0 = w_h4[w];
            let w1 = w_h4[w + H4];
            let w2 = w_h4[w + 2u * H4];
            let w3 = w_h4[w + 3u * H4];
            let d0 = pre[(row0 + next) / 4u + i];
            let d1 = pre[(row1 + next) / 4u + i];
            g0 += w0 * d0.x + w1 * d0.y + w2 * d0.z + w3 * d0.w;
            g1 += w0 * d1.x + w1 * d1.y + w2 * d1.z + w3 * d1.w;
        }
    }
    let z0 = pre[row0 / 4u + q];
    let z1 = pre[row1 / 4u + q];
    pre[row0 / 4u + q] = grad_through4(g0, z0);
    if (two) { pre[row1 / 4u + q] = grad_through4(g1, z1); }
}

@compute @workgroup_size(WG)
fn rnn_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let b = first_sequence(wid, groups, 1u);
    if (b >= shape.batch) { return; } // uniform per workgroup: no barrier is skipped by half
    for (var t = shape.t_begin; t < shape.t_end; t++) {
        let row = (t * shape.batch + b) * shape.hidden;
        for (var j = local; j < shape.hidden; j += WG) {
            forward_unit(t, row, b, j);
        }
        storageBarrier();
    }
}

@compute @workgroup_size(WG)
fn rnn_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let b = first_sequence(wid, groups, 1u);
    if (b >= shape.batch) { return; }
    for (var t = shape.t_end; t > shape.t_begin; t--) {
        let row = ((t - 1u) * shape.batch + b) * shape.hidden;
        for (var q = local; VEC && q < shape.hidden / 4u; q += WG) {
            backward_units4(t - 1u, row, b, q);
        }
        for (var j = local; !VEC && j < shape.hidden; j += WG) {
            backward_unit(t - 1u, row, b, j);
        }
        storageBarrier();
    }
}

// The invocation layout: sequences per invocation, two on the VEC path.
fn sequences() -> u32 {
    return select(1u, 2u, VEC);
}

@compute @workgroup_size(WG)
fn rnn_forward_seq(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let b = first_sequence(wid, groups, WG * sequences()) + sequences() * local;
    if (b >= shape.batch) { return; } // no barrier in this entry point
    let two = b + 1u < shape.batch;
    for (var t = shape.t_begin; t < shape.t_end; t++) {
        for (var q = 0u; VEC && q < shape.hidden / 4u; q++) {
            forward_units4(t, b, q, two);
        }
        let row = (t * shape.batch + b) * shape.hidden;
        for (var j = 0u; !VEC && j < shape.hidden; j++) {
            forward_unit(t, row, b, j);
        }
    }
}

@compute @workgroup_size(WG)
fn rnn_backward_seq(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let b = first_sequence(wid, groups, WG * sequences()) + sequences() * local;
    if (b >= shape.batch) { return; }
    let two = b + 1u < shape.batch;
    for (var t = shape.t_end; t > shape.t_begin; t--) {
        for (var q = 0u; VEC && q < shape.hidden / 4u; q++) {
            backward_units4_rows(t - 1u, b, q, two);
        }
        let row = ((t - 1u) * shape.batch + b) * shape.hidden;
        for (var j = 0u; !VEC && j < shape.hidden; j++) {
            backward_unit(t - 1u, row, b, j);
        }
    }
}
