//! One device training step equals one step of the f64 CPU twin (same init, same batch),
//! for the MLP (with batch norm) and the vanilla RNN (through time).
#![cfg(feature = "train")]

mod common;

use common::gpu;

use gradguard::cpu::optimizer::sgd;
use gradguard::data::BatchOrder;
use gradguard::kernels::activation::Activation;
use gradguard::kernels::optimizer::Sgd;
use gradguard::lab::{exploding_mlp, exploding_rnn};
use gradguard::nn::cpu::CpuModel;
use gradguard::nn::InitScheme;
use gradguard::readback::read_f32s;
use gradguard::train::{ModelChoice, OptimizerChoice, TrainConfig, Trainer};

/// `got` within `rel` of `want`, measured against the tensor's largest magnitude.
fn assert_tensor_close(what: &str, got: &[f32], want: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    // The floor covers tensors whose exact gradient is 0 (a bias before batch norm).
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-4);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= rel * scale, "{what}[{i}]: gpu {g:e}, twin {w:e} (scale {scale:e})");
    }
}

fn check_one_step(mut config: TrainConfig) {
    config.steps = 1;
    config.optimizer = OptimizerChoice::Sgd { momentum: 0.0 };
    config.weight_decay = 1e-3;
    let split = config.task.load(config.seed).unwrap();
    let spec = config.model_spec(&split.train).unwrap();
    let params = spec.init_params(config.seed).unwrap();
    let rows = BatchOrder::new(split.train.len(), config.batch as usize, config.seed).unwrap().rows(0).to_vec();
    let bn_layers = spec.layers.iter().filter(|l| matches!(l, gradguard::nn::LayerSpec::BatchNorm { .. })).count();
    let running: Vec<Vec<f32>> = spec
        .layers
        .iter()
        .filter_map(|l| match l {
            gradguard::nn::LayerSpec::BatchNorm { features } => Some(*features as usize),
            _ => None,
        })
        .flat_map(|f| [vec![0.0; f], vec![1.0; f]])
        .collect();
    assert_eq!(running.len(), 2 * bn_layers);
    let mut twin = CpuModel::new(&spec, &params, &running).unwrap();
    let (loss, grads) = twin.gradients(&split.train, &rows, config.loss_kind()).unwrap();

    let lr = config.lr;
    let mut trainer = Trainer::new(gpu(), config).unwrap();
    trainer.step().unwrap();
    trainer.flush().unwrap();
    let record = &trainer.records()[0];
    assert!((record.loss as f64 - loss).abs() <= 1e-4 * loss.abs().max(1.0), "loss: gpu {}, twin {loss}", record.loss);

    let after = trainer.read_params().unwrap();
    let tensors = spec.tensors();
    let g = gpu();
    let device_grads = trainer.model().arena().unpack(&read_f32s(&g.device, &g.queue, trainer.model().grads()).unwrap());
    for (t, tensor) in tensors.iter().enumerate() {
        assert_tensor_close(&format!("{} grad", tensor.name), &device_grads[t], &grads[t], 2e-4);
        // The SGD twin on the twin's gradient, compared as the change of the parameters.
        let mut want = params[t].clone();
        let g32: Vec<f32> = grads[t].iter().map(|&v| v as f32).collect();
        sgd(&Sgd { momentum: 0.0, dampening: 0.0, weight_decay: 1e-3, nesterov: false }, lr, 0, &mut want, &g32, &mut []);
        let got_delta: Vec<f32> = after[t].iter().zip(&params[t]).map(|(a, p)| a - p).collect();
        let want_delta: Vec<f64> = want.iter().zip(&params[t]).map(|(a, p)| (*a as f64) - (*p as f64)).collect();
        assert_tensor_close(&format!("{} update", tensor.name), &got_delta, &want_delta, 1e-3);
    }
}

#[test]
fn mlp_step_with_batch_norm_matches_twin() {
    let mut config = exploding_mlp(1, 3);
    config.model = ModelChoice::Mlp { depth: 3, width: 24, activation: Activation::Tanh, batchnorm: true };
    config.init = InitScheme::Kaiming;
    check_one_step(config);
}

#[test]
fn deep_relu_mlp_step_matches_twin() {
    let mut config = exploding_mlp(1, 4);
    config.model = ModelChoice::Mlp { depth: 5, width: 33, activation: Activation::Relu, batchnorm: false };
    check_one_step(config);
}

#[test]
fn rnn_step_through_time_matches_twin() {
    let mut config = exploding_rnn(1, 11, 5);
    config.model = ModelChoice::Rnn { hidden: 12, activation: Activation::Tanh };
    config.init = InitScheme::Orthogonal { gain: 1.0 };
    config.batch = 16;
    check_one_step(config);
}

/// Batch-norm running statistics obey the norm's skip flag as the optimizer does: the step
/// whose gradient is NaN (SkipStep) leaves them bitwise unchanged; the steps around it move them.
#[test]
fn nan_gradient_under_skip_step_leaves_running_stats_unchanged() {
    let mut config = exploding_mlp(6, 5);
    config.model = ModelChoice::Mlp { depth: 2, width: 16, activation: Activation::Relu, batchnorm: true };
    config.init = InitScheme::Kaiming;
    config.on_nonfinite = gradguard::NonFinitePolicy::SkipStep;
    config.faults = vec![gradguard::train::Fault { step: 2, layer: "linear1".into(), kind: gradguard::train::FaultKind::Nan, rank: None }];
    let mut trainer = Trainer::new(gpu(), config).unwrap();
    let g = gpu();
    let running = |t: &Trainer| -> Vec<Vec<u32>> {
        t.model().running_stats().iter().map(|b| gradguard::readback::read_buffer(&g.device, &g.queue, b).unwrap()).collect()
    };
    assert_eq!(trainer.model().running_stats().len(), 4, "two batch-norm layers");
    let mut seen = vec![running(&trainer)];
    for _ in 0..4 {
        trainer.step().unwrap();
        seen.push(running(&trainer));
    }
    trainer.flush().unwrap();
    let skipped: Vec<bool> = trainer.records().iter().map(|r| r.skipped).collect();
    assert_eq!(skipped, [false, false, true, false]);
    assert_ne!(seen[1], seen[0], "step 0 moves the running stats");
    assert_ne!(seen[2], seen[1], "step 1 moves the running stats");
    assert_eq!(seen[3], seen[2], "the skipped step 2 must leave the running stats bitwise unchanged");
    assert_ne!(seen[4], seen[3], "step 3 moves them again");
    assert!(seen[4].iter().flatten().all(|w| f32::from_bits(*w).is_finite()));
}

/// An RNN without time steps (or hidden units) is refused before any buffer is made.
#[test]
fn device_model_refuses_zero_sized_layers() {
    use gradguard::nn::{GpuModel, LayerSpec, LossKind, ModelSpec, TrainKernels};
    let g = gpu();
    let kernels = TrainKernels::new(&g.device).unwrap();
    for (steps, hidden) in [(0, 4), (3, 0)] {
        let spec = ModelSpec {
            layers: vec![
                LayerSpec::Rnn { inputs: 2, hidden, steps, activation: Activation::Tanh },
                LayerSpec::Linear { inputs: hidden, outputs: 1 },
            ],
            init: InitScheme::Kaiming,
        };
        let params = vec![vec![0.0; 2 * hidden as usize], vec![0.0; (hidden * hidden) as usize], vec![0.0; hidden as usize], vec![0.0; hidden as usize], vec![0.0]];
        let result = GpuModel::new(&g.device, &kernels, &spec, 4, LossKind::Mse, &params);
        assert!(matches!(result, Err(gradguard::Error::EmptyLayer { .. })), "steps {steps}, hidden {hidden}: {:?}", result.err());
    }
}

/// Rows past the data, or data shorter than it claims, are typed errors, not panics.
#[test]
fn write_batch_refuses_bad_rows_and_short_data() {
    let config = exploding_mlp(1, 2);
    let split = config.task.load(config.seed).unwrap();
    let trainer = Trainer::new(gpu(), config.clone()).unwrap();
    let model = trainer.model();
    let batch = config.batch as usize;
    let data = &split.train;
    let queue = &gpu().queue;
    let good: Vec<usize> = (0..batch).collect();
    model.write_batch(queue, data, &good).unwrap();
    let mut past = good.clone();
    past[batch - 1] = data.len();
    assert!(matches!(model.write_batch(queue, data, &past), Err(gradguard::Error::NotBelow { what: "batch row", .. })));
    past[batch - 1] = usize::MAX;
    assert!(matches!(model.write_batch(queue, data, &past), Err(gradguard::Error::NotBelow { what: "batch row", .. })));
    let mut short = data.clone();
    short.inputs.truncate(short.inputs.len() - 1);
    let rows: Vec<usize> = (short.len() - batch..short.len()).collect();
    assert!(model.write_batch(queue, &short, &rows).is_err());
    let mut short_labels = data.clone();
    if let gradguard::data::Targets::Classes { labels, .. } = &mut short_labels.targets {
        labels.truncate(1);
    }
    assert!(matches!(model.write_batch(queue, &short_labels, &good), Err(gradguard::Error::LengthMismatch { .. })));
    let mut bad_label = data.clone();
    if let gradguard::data::Targets::Classes { labels, classes } = &mut bad_label.targets {
        labels[0] = *classes;
    }
    assert!(matches!(model.write_batch(queue, &bad_label, &good), Err(gradguard::Error::NotBelow { what: "class label", .. })));
}

/// One step under every clip setting the trainer scales on read or clips in place, and
/// every non-finite policy, with and without a NaN in `linear1`'s gradient, equals the f64
/// twin's gradient clipped by the clip twin (`cpu::clip`) and applied by the SGD twin; a
/// skipped step leaves every parameter bit unchanged.
#[test]
fn every_clip_and_nonfinite_policy_step_matches_twin() {
    use gradguard::train::{ClipSetting, Fault, FaultKind};
    use gradguard::{NonFinitePolicy, NormKind};
    let clips = [
        ClipSetting::None,
        ClipSetting::Value { clip_value: 0.01 },
        ClipSetting::GlobalNorm { max_norm: 0.5, kind: NormKind::L2 },
        ClipSetting::GlobalNorm { max_norm: 0.05, kind: NormKind::Inf },
        ClipSetting::PerSegmentNorm { max_norm: 0.2, kind: NormKind::L2 },
        ClipSetting::PerSegmentNorm { max_norm: 1.0, kind: NormKind::L1 },
        ClipSetting::Agc { clipping: 0.01, eps: gradguard::clip::AGC_EPS },
    ];
    let policies = [NonFinitePolicy::Propagate, NonFinitePolicy::Error, NonFinitePolicy::SkipStep, NonFinitePolicy::ZeroNonFinite];
    for clip in clips {
        for nonfinite in policies {
            for fault in [false, true] {
                let mut config = exploding_mlp(1, 6);
                config.model = ModelChoice::Mlp { depth: 2, width: 16, activation: Activation::Relu, batchnorm: false };
                config.init = InitScheme::Kaiming;
                config.optimizer = OptimizerChoice::Sgd { momentum: 0.0 };
                config.weight_decay = 1e-3;
                config.clip = clip;
                config.on_nonfinite = nonfinite;
                config.faults = if fault { vec![Fault { step: 0, layer: "linear1".into(), kind: FaultKind::Nan, rank: None }] } else { vec![] };
                let what = format!("{clip:?} {nonfinite:?} fault={fault}");

                let split = config.task.load(config.seed).unwrap();
                let spec = config.model_spec(&split.train).unwrap();
                let params = spec.init_params(config.seed).unwrap();
                let rows = BatchOrder::new(split.train.len(), config.batch as usize, config.seed).unwrap().rows(0).to_vec();
                let mut twin_model = CpuModel::new(&spec, &params, &[]).unwrap();
                let (_, grads) = twin_model.gradients(&split.train, &rows, config.loss_kind()).unwrap();
                let mut grads: Vec<Vec<f32>> = grads.iter().map(|g| g.iter().map(|&v| v as f32).collect()).collect();
                if fault {
                    grads[0][0] = f32::NAN;
                }

                let mut trainer = Trainer::new(gpu(), config.clone()).unwrap();
                let units = || (trainer.model().param_set(), spec.tensors().iter().map(|t| t.unit_len()).collect());
                let policy = clip.policy(units);
                let stats = gradguard::cpu::clip::clip(&mut grads, &policy, Some(&params), nonfinite);
                trainer.step().unwrap();
                trainer.flush().unwrap();
                assert_eq!(trainer.records()[0].skipped, stats.skipped, "{what}: skipped");
                let after = trainer.read_params().unwrap();
                for (t, tensor) in spec.tensors().iter().enumerate() {
                    if stats.skipped {
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&after[t]), bits(&params[t]), "{what}: {} changed on a skipped step", tensor.name);
                        continue;
                    }
                    let mut want = params[t].clone();
                    sgd(&Sgd { momentum: 0.0, dampening: 0.0, weight_decay: 1e-3, nesterov: false }, config.lr, 0, &mut want, &grads[t], &mut []);
                    let nan_at = |v: &[f32]| v.iter().map(|x| x.is_nan()).collect::<Vec<_>>();
                    assert_eq!(nan_at(&after[t]), nan_at(&want), "{what}: {} NaN positions", tensor.name);
                    let delta = |a: &[f32]| a.iter().zip(&params[t]).map(|(a, p)| if a.is_nan() { 0.0 } else { (a - p) as f64 }).collect::<Vec<_>>();
                    let (got, want) = (delta(&after[t]), delta(&want));
                    let got32: Vec<f32> = got.iter().map(|&v| v as f32).collect();
                    assert_tensor_close(&format!("{what}: {} update", tensor.name), &got32, &want, 2e-3);
                }
            }
        }
    }
}
