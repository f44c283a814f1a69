//! One device training step equals one step of the f64 CPU twin (same init, same batch),
//! for the MLP (with batch norm) and the vanilla RNN (through time).

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
    for (t, tensor) in tensors.iter().enumerate() {
        let device_grad = read_f32s(&g.device, &g.queue, &trainer.model().grads()[t]).unwrap();
        assert_tensor_close(&format!("{} grad", tensor.name), &device_grad[..tensor.len()], &grads[t], 2e-4);
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
    let mut config = exploding_rnn(1, 7, 5);
    config.model = ModelChoice::Rnn { hidden: 12, activation: Activation::Tanh };
    config.init = InitScheme::Orthogonal { gain: 1.0 };
    config.batch = 16;
    check_one_step(config);
}
