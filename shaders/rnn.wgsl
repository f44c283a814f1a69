// A vanilla RNN's recurrence, h_t = act(P_t + W_h·h_{t-1}) from h_{-1} = 0, over the whole
// sequence in one dispatch each way (torch.nn.RNN with one layer). The input projection
// P = X·W_xᵀ + b of every step, and the weight gradients of backpropagation through time,
// are single products over all T·B rows (matmul.wgsl); only the recurrence is serial.
//
// One workgroup per sequence loops over time; its invocations share the hidden units (one
// each up to 256), and h_{t-1} is read from storage after a storage barrier (WGSL has no
// grid-wide barrier, and storage has no size limit, so any hidden size works). A dispatch
// covers the steps [t_begin, t_end): all of them on GPUs; on lavapipe as many as its loop
// limiter allows (Mesa 22.3 ends every loop of an invocation after 65,535 iterations in
// all, silently), the host cutting the sequence into chunks. Layouts, row-major:
//   pre  [T, B, H]     rnn_forward: P on entry, the pre-activations z_t on exit;
//                      rnn_backward: z_t on entry, dL/dz_t on exit (in place: step t reads
//                      z_t and writes dL/dz_t of the same unit), which the weight-gradient
//                      products then read
//   hs   [T + 1, B, H] hs[0] = 0 (never written), hs[t + 1] = h_t
//   edge [B, H]        rnn_forward: h_{T-1} (the layer's output); rnn_backward: its gradient

struct RnnShape {
    batch: u32,
    hidden: u32,
    steps: u32,
    act: u32,     // act.wgsl's kind
    slope: f32,   // leaky relu's negative slope
    t_begin: u32, // the steps this dispatch covers
    t_end: u32,
    pad: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> w_h: array<f32>; // [H, H], W_h[j, k] at j·H + k
@group(0) @binding(1) var<storage, read> shape: RnnShape;
@group(0) @binding(2) var<storage, read_write> pre: array<f32>;
@group(0) @binding(3) var<storage, read_write> hs: array<f32>;
@group(0) @binding(4) var<storage, read_write> edge: array<f32>;

// The vector `dot` multiplies: h_{t-1} in the forward, dL/dz_{t+1} in the backward.
override BACKWARD: bool = false;

fn state(i: u32) -> f32 {
    if (BACKWARD) { return pre[i]; }
    return hs[i];
}

// The sequence of workgroup `wid`, or B past the last (the grid overshoots).
fn sequence(wid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return min(wid.y * groups.x + wid.x, shape.batch);
}

// Σ_k w[w0 + k·stride] · v[v0 + k] over k < n, four terms a loop trip (fewer trips for
// lavapipe's loop limiter, more loads in flight).
fn dot(w0: u32, stride: u32, v0: u32, n: u32) -> f32 {
    var acc = vec4(0.0);
    var k = 0u;
    for (; k + 4u <= n; k += 4u) {
        let w = vec4(w_h[w0 + k * stride], w_h[w0 + (k + 1u) * stride], w_h[w0 + (k + 2u) * stride], w_h[w0 + (k + 3u) * stride]);
        let v = vec4(state(v0 + k), state(v0 + k + 1u), state(v0 + k + 2u), state(v0 + k + 3u));
        acc += w * v;
    }
    var sum = (acc.x + acc.y) + (acc.z + acc.w);
    for (; k < n; k++) {
        sum += w_h[w0 + k * stride] * state(v0 + k);
    }
    return sum;
}

@compute @workgroup_size(WG)
fn rnn_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let b = sequence(wid, groups);
    if (b >= shape.batch) { return; } // uniform per workgroup: no barrier is skipped by half
    let H = shape.hidden;
    let B = shape.batch;
    for (var t = shape.t_begin; t < shape.t_end; t++) {
        let row = (t * B + b) * H;
        for (var j = local; j < H; j += WG) {
            var z = pre[row + j];
            // hs[t] holds h_{t-1}: W_h[j, :]·h_{t-1}.
            if (t > 0u) { z += dot(j * H, 1u, row, H); }
            pre[row + j] = z;
            let h = activate(shape.act, shape.slope, z);
            hs[row + B * H + j] = h;
            if (t + 1u == shape.steps) { edge[b * H + j] = h; }
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
    let b = sequence(wid, groups);
    if (b >= shape.batch) { return; }
    let H = shape.hidden;
    let B = shape.batch;
    for (var t = shape.t_end; t > shape.t_begin; t--) {
        let row = ((t - 1u) * B + b) * H;
        for (var j = local; j < H; j += WG) {
            // dL/dh_t: from the layer above at the last step, else W_h[:, j]·dL/dz_{t+1}.
            var g = 0.0;
            if (t == shape.steps) {
                g = edge[b * H + j];
            } else {
                g = dot(j, H, row + B * H, H);
            }
            pre[row + j] = grad_through(shape.act, shape.slope, g, pre[row + j]);
        }
        storageBarrier();
    }
}
