// Elementwise activations (act.wgsl): forward y = f(x), backward dx = dy·f'(x) from the
// forward input x, each also in place (the operand in `out`; the binding it replaces is a
// placeholder, so no buffer is bound twice).

struct Params {
    len: u32,
    kind: u32,
    slope: f32, // leaky relu's negative slope
    pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>; // backward only
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

fn index(wid: vec3<u32>, groups: vec3<u32>, local: u32) -> u32 {
    return (wid.y * groups.x + wid.x) * 256u + local;
}

@compute @workgroup_size(256)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = index(wid, groups, local);
    if (i < params.len) { out[i] = activate(params.kind, params.slope, x[i]); }
}

@compute @workgroup_size(256)
fn backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = index(wid, groups, local);
    if (i < params.len) { out[i] = grad_through(params.kind, params.slope, dy[i], x[i]); }
}

@compute @workgroup_size(256)
fn forward_in_place(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = index(wid, groups, local);
    if (i < params.len) { out[i] = activate(params.kind, params.slope, out[i]); }
}

@compute @workgroup_size(256)
fn backward_in_place(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = index(wid, groups, local);
    if (i < params.len) { out[i] = grad_through(params.kind, params.slope, out[i], x[i]); }
}
