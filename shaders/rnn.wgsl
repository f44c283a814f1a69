// A vanilla RNN's recurrence, h_t = act(P_t + W_h·h_{t-1}) from h_{-1} = 0, over the whole
// sequence in one dispatch each way (torch.nn.RNN with one layer). The input projection
// P = X·W_xᵀ + b of every step, and the weight gradients of backpropagation through time,
// are single products over all T·B rows (matmul.wgsl); only the recurrence is serial.
//
// One workgroup per sequence loops over time; its invocations share the hidden units, and
// h_{t-1} is read from storage after a storage barrier (WGSL has no grid-wide barrier, and
// storage has no size limit, so any hidden size works). Layouts, row-major:
//   pre  [T, B, H]    P on entry to rnn_forward, the pre-activations z_t on exit
//   hs   [T + 1, B, H] hs[0] = 0 (never written), hs[t + 1] = h_t
//   edge [B, H]       rnn_forward: h_{T-1} (the layer's output); rnn_backward: its gradient
//   dpre [T, B, H]    rnn_backward: dL/dz_t, which the weight-gradient products read

struct RnnShape {
    batch: u32,
    hidden: u32,
    steps: u32,
    act: u32,   // act.wgsl's kind
    slope: f32, // leaky relu's negative slope
}

override WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> w_h: array<f32>; // [H, H], W_h[j, k] at j·H + k
@group(0) @binding(1) var<storage, read> shape: RnnShape;
@group(0) @binding(2) var<storage, read_write> pre: array<f32>;
@group(0) @binding(3) var<storage, read_write> hs: array<f32>;
@group(0) @binding(4) var<storage, read_write> edge: array<f32>;
@group(0) @binding(5) var<storage, read_write> dpre: array<f32>;

// The sequence of workgroup `wid`, or B past the last (the grid overshoots).
fn sequence(wid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return min(wid.y * groups.x + wid.x, shape.batch);
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
    for (var t = 0u; t < shape.steps; t++) {
        let row = (t * B + b) * H;
        for (var j = local; j < H; j += WG) {
            var z = pre[row + j];
            if (t > 0u) {
                // hs[t] holds h_{t-1}.
                let w = j * H;
                for (var k = 0u; k < H; k++) {
                    z += w_h[w + k] * hs[row + k];
                }
            }
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
    for (var s = 0u; s < shape.steps; s++) {
        let t = shape.steps - 1u - s;
        let row = (t * B + b) * H;
        for (var j = local; j < H; j += WG) {
            // dL/dh_t: from the layer above at the last step, else W_hᵀ·dL/dz_{t+1}.
            var g = 0.0;
            if (s == 0u) {
                g = edge[b * H + j];
            } else {
                let next = row + B * H;
                for (var i = 0u; i < H; i++) {
                    g += w_h[i * H + j] * dpre[next + i];
                }
            }
            dpre[row + j] = grad_through(shape.act, shape.slope, g, pre[row + j]);
        }
        storageBarrier();
    }
}
