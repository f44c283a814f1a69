//! A plain wgpu program that owns its device and its buffers (parameters, gradients laid out
//! as the parameters, and three for activations: WebGPU lets no dispatch read a buffer it
//! writes, so each kernel's inputs and outputs sit in different ones), every operand a view
//! at a non-zero offset inside them, and records one hand-written training step of a small network into its own
//! encoder with gradguard's kernels alone (the core: `--no-default-features`):
//!
//!   Linear(5→6) → ReLU → BatchNorm1d(6) → Linear(6→3) → cross-entropy, backward through
//!   all of it, AGC then global-norm clipping, SGD with momentum; and a tanh RNN's whole
//!   sequence forward and backward beside it, its dL/dz clipped where it lies by value, then
//!   by ZClip's adaptive threshold.
//!
//! Every result is checked against the CPU twins; it exits non-zero on a mismatch.
//!
//!     cargo run --release --no-default-features --example kernels_on_views

use gradguard::kernels::activation::{Activation, ActivationKernel};
use gradguard::kernels::batchnorm::{BatchNorm, BatchNormBackward, BatchNormKernel, BatchNormTrain};
use gradguard::kernels::loss::LossKernel;
use gradguard::kernels::matmul::{Epilogue, MatmulKernel, MatmulOp, MatmulOperands};
use gradguard::kernels::optimizer::{lr_buffer, GradScale, Optimizer, OptimizerBuffers, OptimizerKernel, OptimizerState, Sgd};
use gradguard::kernels::rnn::{RnnBackward, RnnForward, RnnKernel, RnnShape};
use gradguard::kernels::View;
use gradguard::wgpu::{self, util::DeviceExt};
use gradguard::{cpu, AdaptivePolicy, ClipPolicy, GradClip, GradSet, GradView, NonFinitePolicy, NormKind, ZClip};

const B: u32 = 8;
const I: u32 = 5;
const H: u32 = 6;
const C: u32 = 3;
const LR: f32 = 0.1;

/// Places tensors one after another in a buffer, each at a multiple of 256 bytes and never
/// at offset 0, as an application's own allocator might.
#[derive(Default)]
struct Layout {
    words: u64,
}

impl Layout {
    /// The element offset of a new tensor of `len` elements.
    fn place(&mut self, len: u64) -> u64 {
        let at = (self.words + 64).next_multiple_of(64);
        self.words = at + len;
        at
    }
}

/// A tensor: its element offset in its buffer and its values.
struct Tensor {
    at: u64,
    values: Vec<f32>,
}

fn values(seed: u64, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|i| ((((i as u64 + 1) * 2654435761 + seed * 40503) % 1000) as f32 / 500.0 - 1.0) * scale).collect()
}

fn main() {
    if let Err(e) = run() {
        eprintln!("kernels_on_views: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: gradguard::required_features(),
        required_limits: gradguard::required_limits(),
        ..Default::default()
    }))?;
    println!("adapter: {}", adapter.get_info().name);

    // Parameters (and their gradients, at the same offsets of the gradient buffer).
    let mut pl = Layout::default();
    let shapes: [(&str, u64, f32); 6] =
        [("w1", (H * I) as u64, 0.5), ("b1", H as u64, 0.1), ("gamma", H as u64, 0.0), ("beta", H as u64, 0.1), ("w2", (C * H) as u64, 0.5), ("b2", C as u64, 0.1)];
    let params: Vec<Tensor> = shapes
        .iter()
        .enumerate()
        .map(|(k, &(name, len, scale))| {
            let v = if name == "gamma" { vec![1.0; len as usize] } else { values(k as u64, len as usize, scale) };
            Tensor { at: pl.place(len), values: v }
        })
        .collect();
    // Activations in three buffers (A, B, C) and the RNN's tensors: see the module docs.
    let (mut la, mut lb, mut lc) = (Layout::default(), Layout::default(), Layout::default());
    let rnn = RnnShape { batch: 2, inputs: 3, hidden: 4, steps: 5, activation: Activation::Tanh };
    let x = Tensor { at: la.place((B * I) as u64), values: values(7, (B * I) as usize, 2.0) };
    let targets: Vec<u32> = (0..B).map(|r| r % C).collect();
    let [h, logits, target_at, dz] = [B * H, B * C, B, B * H].map(|len| la.place(len as u64));
    let [z, saved, running_mean, running_var, dlogits, loss, dh] = [B * H, 2 * H, H, H, B * C, 1, B * H].map(|len| lb.place(len as u64));
    let h_pre = lc.place((B * H) as u64);
    let tensor = |l: &mut Layout, seed, len: u64, scale| Tensor { at: l.place(len), values: values(seed, len as usize, scale) };
    let rnn_x = tensor(&mut la, 8, (rnn.steps * rnn.batch * rnn.inputs) as u64, 1.0);
    let rnn_wx = tensor(&mut la, 9, (rnn.hidden * rnn.inputs) as u64, 0.5);
    let rnn_b = tensor(&mut la, 10, rnn.hidden as u64, 0.1);
    let rnn_wh = tensor(&mut la, 11, rnn.w_h_len(), 0.4);
    // The backward binds the output gradient writable: beside what it writes, not what it reads.
    let rnn_dlast = tensor(&mut lc, 12, rnn.step_len(), 1.0);
    let [rnn_pre, rnn_hs, rnn_last] = [rnn.pre_len(), rnn.hs_len(), rnn.step_len()].map(|len| lc.place(len));

    let mut host_params = vec![0f32; pl.words as usize];
    for t in &params {
        host_params[t.at as usize..t.at as usize + t.values.len()].copy_from_slice(&t.values);
    }
    let mut host_a = vec![0f32; la.words as usize];
    for t in [&x, &rnn_x, &rnn_wx, &rnn_b, &rnn_wh] {
        host_a[t.at as usize..t.at as usize + t.values.len()].copy_from_slice(&t.values);
    }
    for (i, &t) in targets.iter().enumerate() {
        host_a[target_at as usize + i] = f32::from_bits(t);
    }
    let mut host_c = vec![0f32; lc.words as usize];
    host_c[rnn_dlast.at as usize..rnn_dlast.at as usize + rnn_dlast.values.len()].copy_from_slice(&rnn_dlast.values);
    let mut host_b = vec![0f32; lb.words as usize];
    host_b[running_var as usize..(running_var + H as u64) as usize].fill(1.0);
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let make = |label, data: &[f32]| {
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some(label), contents: bytemuck::cast_slice(data), usage })
    };
    let (pbuf, gbuf) = (make("app params", &host_params), make("app grads", &vec![0.0; pl.words as usize]));
    let (abuf, bbuf, cbuf) = (make("app activations A", &host_a), make("app activations B", &host_b), make("app activations C", &host_c));
    let (p, g) = (|k: usize| View::at(&pbuf, 4 * params[k].at), |k: usize| View::at(&gbuf, 4 * params[k].at));
    let (a, b, c) = (|at: u64| View::at(&abuf, 4 * at), |at: u64| View::at(&bbuf, 4 * at), |at: u64| View::at(&cbuf, 4 * at));

    // Bind everything once.
    let (mm, act, bnk, lossk, opt, rnnk) = (
        MatmulKernel::new(&device)?,
        ActivationKernel::new(&device)?,
        BatchNormKernel::new(&device)?,
        LossKernel::new(&device)?,
        OptimizerKernel::new(&device)?,
        RnnKernel::new(&device)?,
    );
    let bn = BatchNorm::new(B, H);
    let fc1 = mm.bind_views(&device, &MatmulOp::linear_forward(B, I, H), MatmulOperands { a: a(x.at), b: p(0), bias: Some(p(1)), c: c(h_pre), aux: None })?;
    let relu = act.bind_forward(&device, Activation::Relu, (B * H) as u64, c(h_pre), a(h))?;
    let bn_fwd = bnk.bind_train(&device, &bn, BatchNormTrain { x: a(h), gamma: p(2), beta: p(3), y: b(z), saved: b(saved), running_mean: b(running_mean), running_var: b(running_var) })?;
    let fc2 = mm.bind_views(&device, &MatmulOp::linear_forward(B, H, C), MatmulOperands { a: b(z), b: p(4), bias: Some(p(5)), c: a(logits), aux: None })?;
    let ce = lossk.bind_cross_entropy(&device, B, C, a(logits), a(target_at), b(dlogits), b(loss))?;
    let dfc2 = mm.bind_views(&device, &MatmulOp::linear_weight_grad(B, H, C).with(Epilogue::BiasGrad), MatmulOperands { a: b(dlogits), b: b(z), bias: None, c: g(4), aux: Some(g(5)) })?;
    let dz_of = mm.bind_views(&device, &MatmulOp::linear_input_grad(B, H, C), MatmulOperands { a: b(dlogits), b: p(4), bias: None, c: a(dz), aux: None })?;
    let bn_bwd = bnk.bind_backward(&device, &bn, BatchNormBackward { x: a(h), gamma: p(2), saved: b(saved), dy: a(dz), dx: b(dh), dgamma: g(2), dbeta: g(3) })?;
    let relu_bwd = act.bind_backward_in_place(&device, Activation::Relu, (B * H) as u64, c(h_pre), b(dh))?;
    let dfc1 = mm.bind_views(&device, &MatmulOp::linear_weight_grad(B, I, H).with(Epilogue::BiasGrad), MatmulOperands { a: b(dh), b: a(x.at), bias: None, c: g(0), aux: Some(g(1)) })?;
    let set_of = |buffer: &wgpu::Buffer| GradSet::new(params.iter().map(|t| GradView { buffer: buffer.clone(), offset: 4 * t.at, len: t.values.len() as u64 }).collect());
    let unit_lens: Vec<u64> = vec![I as u64, 1, 1, 1, H as u64, 1];
    let agc_policy = ClipPolicy::Agc { clipping: 0.05, eps: 1e-3, params: set_of(&pbuf), unit_lens };
    let agc = GradClip::new(&device, &set_of(&gbuf), agc_policy.clone(), NonFinitePolicy::SkipStep)?;
    let norm_policy = ClipPolicy::GlobalNorm { max_norm: 0.05, kind: NormKind::L2 };
    let clip = GradClip::new(&device, &set_of(&gbuf), norm_policy.clone(), NonFinitePolicy::SkipStep)?;
    let sgd = Sgd { momentum: 0.9, dampening: 0.0, weight_decay: 1e-3, nesterov: false };
    let state = OptimizerState::new(&device, &Optimizer::Sgd(sgd), pl.words)?;
    let ranges: Vec<(u64, u64)> = params.iter().map(|t| (t.at, t.values.len() as u64)).collect();
    let lr = lr_buffer(&device, LR)?;
    let buffers = OptimizerBuffers {
        params: &pbuf,
        grads: &gbuf,
        tensors: &ranges,
        state: &state,
        lr: &lr,
        stats: Some(clip.stats_buffer()),
        segment_coefs: None,
        scale: GradScale::None,
        zero_nonfinite: false,
    };
    let update = opt.bind(&device, &Optimizer::Sgd(sgd), buffers)?;
    let rnn_fwd = rnnk.bind_forward(&device, &rnn, RnnForward { x: a(rnn_x.at), w_x: a(rnn_wx.at), bias: a(rnn_b.at), w_h: a(rnn_wh.at), pre: c(rnn_pre), hs: c(rnn_hs), last: c(rnn_last) })?;
    let rnn_bwd = rnnk.bind_backward(&device, &rnn, RnnBackward { w_h: a(rnn_wh.at), pre: c(rnn_pre), d_last: c(rnn_dlast.at) })?;
    // The backward leaves dL/dz in `pre`: clip it there, by value, then under ZClip (still
    // warming up, so its fixed cap applies).
    let pre_set = GradSet::new(vec![GradView { buffer: cbuf.clone(), offset: 4 * rnn_pre, len: rnn.pre_len() }]);
    let value_policy = ClipPolicy::Value { clip_value: 0.02 };
    let value_clip = GradClip::new(&device, &pre_set, value_policy.clone(), NonFinitePolicy::SkipStep)?;
    let zclip_policy = ClipPolicy::Adaptive(AdaptivePolicy::ZClip(ZClip { max_norm: Some(0.05), ..ZClip::default() }));
    let zclip = GradClip::new(&device, &pre_set, zclip_policy.clone(), NonFinitePolicy::SkipStep)?;

    // The application's encoder: one pass for the step, clipping in the same pass.
    let mut encoder = device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        mm.encode(&mut pass, &fc1);
        act.encode(&mut pass, &relu);
        bnk.encode(&mut pass, &bn_fwd);
        mm.encode(&mut pass, &fc2);
        lossk.encode(&mut pass, &ce);
        mm.encode(&mut pass, &dfc2);
        mm.encode(&mut pass, &dz_of);
        bnk.encode(&mut pass, &bn_bwd);
        act.encode(&mut pass, &relu_bwd);
        mm.encode(&mut pass, &dfc1);
        agc.encode_in_pass(&mut pass);
        clip.encode_in_pass(&mut pass);
        opt.encode(&mut pass, &update);
        rnnk.encode(&mut pass, &rnn_fwd);
        rnnk.encode(&mut pass, &rnn_bwd);
        value_clip.encode_in_pass(&mut pass);
        zclip.encode_in_pass(&mut pass);
    }
    queue.submit([encoder.finish()]);
    let read = |b: &wgpu::Buffer| gradguard::readback::read_f32s(&device, &queue, b);
    let (gp, ga, gb, gc) = (read(&pbuf)?, read(&abuf)?, read(&bbuf)?, read(&cbuf)?);

    // The same step on the CPU twins.
    let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let pv = |k: usize| params[k].values.clone();
    let matmul = |op: &MatmulOp, a_: &[f32], b_: &[f32], bias: Option<&[f32]>, len: usize, aux_len: usize| {
        let (mut c, mut aux) = (vec![0f32; len], vec![0f32; aux_len]);
        cpu::matmul::matmul(op, a_, b_, bias, &mut c, &mut aux);
        (c, aux)
    };
    let (hp, _) = matmul(&MatmulOp::linear_forward(B, I, H), &x.values, &pv(0), Some(&pv(1)), (B * H) as usize, 0);
    let hv: Vec<f32> = hp.iter().map(|&v| cpu::activation::forward(Activation::Relu, v as f64) as f32).collect();
    let (mut rm, mut rv) = (vec![0.0; H as usize], vec![1.0; H as usize]);
    let (zv, mean, inv_std) = cpu::batchnorm::train(&bn, &f64s(&hv), &f64s(&pv(2)), &f64s(&pv(3)), &mut rm, &mut rv);
    let (lg, _) = matmul(&MatmulOp::linear_forward(B, H, C), &f32s(&zv), &pv(4), Some(&pv(5)), (B * C) as usize, 0);
    let (want_loss, dlg) = cpu::loss::cross_entropy(&f64s(&lg), &targets, C as usize);
    let (dw2, db2) = matmul(&MatmulOp::linear_weight_grad(B, H, C).with(Epilogue::BiasGrad), &f32s(&dlg), &f32s(&zv), None, (C * H) as usize, C as usize);
    let (dzv, _) = matmul(&MatmulOp::linear_input_grad(B, H, C), &f32s(&dlg), &pv(4), None, (B * H) as usize, 0);
    let (dhv, dgamma, dbeta) = cpu::batchnorm::backward(&bn, &f64s(&hv), &f64s(&pv(2)), &mean, &inv_std, &f64s(&dzv));
    let dhv: Vec<f32> = dhv.iter().zip(&hp).map(|(&d, &x)| cpu::activation::grad_through(Activation::Relu, d, x as f64) as f32).collect();
    let (dw1, db1) = matmul(&MatmulOp::linear_weight_grad(B, I, H).with(Epilogue::BiasGrad), &dhv, &x.values, None, (H * I) as usize, H as usize);
    let mut grads = vec![dw1, db1, f32s(&dgamma), f32s(&dbeta), dw2, db2];
    let param_values: Vec<Vec<f32>> = (0..6).map(pv).collect();
    cpu::clip::clip(&mut grads, &agc_policy, Some(&param_values), NonFinitePolicy::SkipStep);
    let stats = cpu::clip::clip(&mut grads, &norm_policy, None, NonFinitePolicy::SkipStep);
    let mut want_params = param_values.clone();
    for (k, w) in want_params.iter_mut().enumerate() {
        let mut momentum = vec![0.0; w.len()];
        cpu::optimizer::sgd(&sgd, LR, 0, w, &grads[k], &mut momentum);
    }
    let (mut pre, mut hs, mut last) = (vec![0f32; rnn.pre_len() as usize], vec![0f32; rnn.hs_len() as usize], vec![0f32; rnn.step_len() as usize]);
    let weights = cpu::rnn::RnnWeights { w_x: &rnn_wx.values, bias: &rnn_b.values, w_h: &rnn_wh.values };
    cpu::rnn::forward(&rnn, weights, &rnn_x.values, &mut pre, &mut hs, &mut last);
    cpu::rnn::backward(&rnn, &rnn_wh.values, &mut pre, &rnn_dlast.values);
    let mut pre_grads = [pre];
    cpu::clip::clip(&mut pre_grads, &value_policy, None, NonFinitePolicy::SkipStep);
    let pre_stats = cpu::clip::clip(&mut pre_grads, &zclip_policy, None, NonFinitePolicy::SkipStep);
    let [pre] = pre_grads;

    // Compare, relative to each tensor's largest magnitude.
    let mut bad = Vec::new();
    let mut check = |what: &str, got: &[f32], want: &[f32], rel: f32| {
        let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        // Negated so that a NaN counts as wrong.
        let wrong = got.iter().zip(want).filter(|(g, w)| !((*g - *w).abs() <= rel * scale)).count();
        if wrong > 0 || got.len() != want.len() {
            bad.push(format!("{what}: {wrong} of {} differ (gpu {:?}…, twin {:?}…)", want.len(), &got[..got.len().min(3)], &want[..want.len().min(3)]));
        }
    };
    let slice = |v: &[f32], at: u64, len: usize| v[at as usize..at as usize + len].to_vec();
    check("loss", &slice(&gb, loss, 1), &[want_loss as f32], 1e-5);
    check("logits", &slice(&ga, logits, (B * C) as usize), &lg, 1e-5);
    check("batch norm output", &slice(&gb, z, (B * H) as usize), &f32s(&zv), 1e-4);
    check("running mean", &slice(&gb, running_mean, H as usize), &f32s(&rm), 1e-5);
    check("running var", &slice(&gb, running_var, H as usize), &f32s(&rv), 1e-5);
    // The updates themselves (after − before), so that a small error in one stands out.
    let delta = |after: &[f32], before: &[f32]| after.iter().zip(before).map(|(a, b)| a - b).collect::<Vec<f32>>();
    for (k, (name, ..)) in shapes.iter().enumerate() {
        let got = slice(&gp, params[k].at, params[k].values.len());
        check(&format!("{name}'s update"), &delta(&got, &params[k].values), &delta(&want_params[k], &params[k].values), 1e-3);
    }
    check("rnn last hidden state", &slice(&gc, rnn_last, rnn.step_len() as usize), &last, 1e-5);
    check("rnn dL/dz, clipped by value and ZClip", &slice(&gc, rnn_pre, rnn.pre_len() as usize), &pre, 1e-4);
    // Nothing outside the views was written: the parameter buffer's gaps are still 0.
    let covered: Vec<(u64, u64)> = params.iter().map(|t| (t.at, t.at + t.values.len() as u64)).collect();
    let stray = gp.iter().enumerate().filter(|(i, v)| **v != 0.0 && !covered.iter().any(|&(s, e)| (s..e).contains(&(*i as u64)))).count();
    if stray > 0 {
        bad.push(format!("{stray} parameter-buffer words outside every view were written"));
    }
    println!("loss {want_loss:.6}, gradient norm after AGC {:.6}, clipped to 0.05; {} checks", stats.norm, 12 + shapes.len());
    println!("rnn dL/dz: norm {:.4} after the value clip, scaled by {:.4} under ZClip", pre_stats.norm, pre_stats.clip_coef);
    if !bad.is_empty() {
        return Err(bad.join("\n").into());
    }
    println!("ok");
    Ok(())
}
