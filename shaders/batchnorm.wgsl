// BatchNorm1d over x [batch, features] row-major, as torch.nn.BatchNorm1d (affine). One
// workgroup per feature, rows strided over its threads, fixed-order tree reductions.
//   train     mean, biased variance σ² (two passes over the column), inv_std = 1/√(σ² + eps),
//             y = (x - mean)·inv_std·γ + β; saves mean and inv_std; running stats move by
//             momentum towards mean and the UNBIASED variance σ²·n/(n-1).
//             With DEFER_RUNNING the training forward leaves the running stats alone and
//             saves the biased variance as a third row of `saved`; `running`, recorded after
//             the gradient norm, then moves them unless the norm flagged the step as skipped
//             (a non-finite step leaves them bitwise unchanged, as the optimizer leaves the
//             weights).
//   eval      y = (x - running_mean)/√(running_var + eps)·γ + β.
//   backward  dβ = Σ dy, dγ = Σ dy·x̂, dx = γ·inv_std/n · (n·dy - dβ - x̂·dγ), x̂ = (x - mean)·inv_std.

struct Params {
    batch: u32,
    features: u32,
    momentum: f32,
    eps: f32,
}

// Bindings serve each entry point as named after the slash.
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta_dy: array<f32>;                // β / dy
@group(0) @binding(3) var<storage, read_write> out: array<f32>;              // y / dx
@group(0) @binding(4) var<storage, read_write> saved: array<f32>;            // [mean; inv_std (; biased var)]
@group(0) @binding(5) var<storage, read_write> running_mean_dgamma: array<f32>; // running mean / dγ
@group(0) @binding(6) var<storage, read_write> running_var_dbeta: array<f32>;   // running var / dβ
@group(0) @binding(7) var<uniform> params: Params;
@group(0) @binding(8) var<storage, read> norm_stats: array<u32>;             // running: the norm's stats

// Training forward: leave the running stats to `running` (saved gets 3·features).
override DEFER_RUNNING: bool = false;

// Word of the gradient-norm stats holding the skip flag (norm::STATS_SKIP_OFFSET / 4).
const SKIP_WORD: u32 = 2u;

const WG: u32 = 64u;

var<workgroup> scratch: array<f32, WG>;

fn reduce_sum(local: u32, value: f32) -> f32 {
    scratch[local] = value;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (local < stride) { scratch[local] += scratch[local + stride]; }
        workgroupBarrier();
    }
    let result = scratch[0];
    workgroupBarrier();
    return result;
}

fn feature(wid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return wid.y * groups.x + wid.x;
}

// torch's momentum update, towards the batch mean and the unbiased batch variance.
fn update_running(f: u32, mean: f32, var_biased: f32) {
    let n = f32(params.batch);
    let m = params.momentum;
    running_mean_dgamma[f] = (1.0 - m) * running_mean_dgamma[f] + m * mean;
    running_var_dbeta[f] = (1.0 - m) * running_var_dbeta[f] + m * var_biased * n / (n - 1.0);
}

@compute @workgroup_size(64)
fn train(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let f = feature(wid, groups);
    let nf = params.features;
    if (f >= nf) { return; }
    let n = f32(params.batch);
    var s = 0.0;
    for (var b = local; b < params.batch; b += WG) { s += x[b * nf + f]; }
    let mean = reduce_sum(local, s) / n;
    var s2 = 0.0;
    for (var b = local; b < params.batch; b += WG) { let d = x[b * nf + f] - mean; s2 += d * d; }
    let var_biased = reduce_sum(local, s2) / n;
    let inv_std = 1.0 / sqrt(var_biased + params.eps);
    let scale = inv_std * gamma[f];
    for (var b = local; b < params.batch; b += WG) {
        out[b * nf + f] = (x[b * nf + f] - mean) * scale + beta_dy[f];
    }
    if (local == 0u) {
        saved[f] = mean;
        saved[nf + f] = inv_std;
        if (DEFER_RUNNING) {
            saved[2u * nf + f] = var_biased;
        } else {
            update_running(f, mean, var_biased);
        }
    }
}

// The deferred running-stat update: one thread per feature, from `saved`, skipped with the step.
@compute @workgroup_size(64)
fn running(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let f = feature(wid, groups) * 64u + local;
    let nf = params.features;
    if (f >= nf || norm_stats[SKIP_WORD] != 0u) { return; }
    update_running(f, saved[f], saved[2u * nf + f]);
}

@compute @workgroup_size(64)
fn eval(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let f = feature(wid, groups);
    let nf = params.features;
    if (f >= nf) { return; }
    let mean = running_mean_dgamma[f];
    let scale = gamma[f] / sqrt(running_var_dbeta[f] + params.eps);
    for (var b = local; b < params.batch; b += WG) {
        out[b * nf + f] = (x[b * nf + f] - mean) * scale + beta_dy[f];
    }
}

@compute @workgroup_size(64)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let f = feature(wid, groups);
    let nf = params.features;
    if (f >= nf) { return; }
    let n = f32(params.batch);
    let mean = saved[f];
    let inv_std = saved[nf + f];
    var s_dy = 0.0;
    var s_dyx = 0.0;
    for (var b = local; b < params.batch; b += WG) {
        let i = b * nf + f;
        s_dy += beta_dy[i];
        s_dyx += beta_dy[i] * (x[i] - mean) * inv_std;
    }
    let dbeta = reduce_sum(local, s_dy);
    let dgamma = reduce_sum(local, s_dyx);
    let k = gamma[f] * inv_std / n;
    for (var b = local; b < params.batch; b += WG) {
        let i = b * nf + f;
        out[i] = k * (n * beta_dy[i] - dbeta - (x[i] - mean) * inv_std * dgamma);
    }
    if (local == 0u) {
        running_mean_dgamma[f] = dgamma;
        running_var_dbeta[f] = dbeta;
    }
}
