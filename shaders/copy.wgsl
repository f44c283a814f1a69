// The roofline: read N floats, write N floats. Benchmarks divide by its rate.

@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;

// Invocations a workgroup, set by the host (`kernels::streaming_workgroup_size`).
override WG: u32 = 256u;
// Each workgroup copies a contiguous block of VEC4S_PER_GROUP, as the norm's tiles do.
override VEC4S_PER_GROUP: u32 = 2048u;

@compute @workgroup_size(WG)
fn copy(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let g = wid.y * groups.x + wid.x;
    let start = g * VEC4S_PER_GROUP;
    let end = min(start + VEC4S_PER_GROUP, arrayLength(&src));
    for (var i = start + local; i < end; i += WG) {
        dst[i] = src[i];
    }
}
