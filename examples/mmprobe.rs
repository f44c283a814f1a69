use gradguard::kernels::matmul::{MatmulKernel, MatmulOp, Epilogue, MatmulOperands};
use gradguard::kernels::activation::Activation;
use gradguard::{wgpu, Gpu};
use std::time::Instant;
fn main() {
    let gpu = Gpu::new().unwrap();
    let d = &gpu.device;
    let k = MatmulKernel::new(d).unwrap();
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
    let mk = |n: u64| d.create_buffer(&wgpu::BufferDescriptor { label: None, size: 4 * n, usage, mapped_at_creation: false });
    let a = mk(1 << 20); let b = mk(1 << 20); let c = mk(1 << 20); let aux = mk(1 << 20); let bias = mk(4096);
    let shapes: Vec<(&str, MatmulOp, bool)> = vec![
        ("fwd 64x64x64 relu", MatmulOp::linear_forward(64, 64, 64).with(Epilogue::Activate(Activation::Relu)), true),
        ("fwd 64x64x64 plain", MatmulOp::linear_forward(64, 64, 64), false),
        ("wgrad 64x64 k64 +bias", MatmulOp::linear_weight_grad(64, 64, 64).with(Epilogue::BiasGrad), true),
        ("wgrad 64x64 k64", MatmulOp::linear_weight_grad(64, 64, 64), false),
        ("igrad 64x64 k64 relu'", MatmulOp::linear_input_grad(64, 64, 64).with(Epilogue::ThroughActivation(Activation::Relu)), true),
        ("igrad 64x64 k64", MatmulOp::linear_input_grad(64, 64, 64), false),
        ("fwd 1920x32x2 (rnn in)", MatmulOp::linear_forward(1920, 2, 32), false),
        ("wgrad 32x32 k1920", MatmulOp::linear_weight_grad(1920, 32, 32), false),
        ("wgrad 32x2 k1920 +b", MatmulOp::linear_weight_grad(1920, 2, 32).with(Epilogue::BiasGrad), true),
    ];
    for (name, op, has_aux) in shapes {
        let v = MatmulOperands { a: (&a).into(), b: (&b).into(), bias: None, c: (&c).into(), aux: has_aux.then(|| (&aux).into()) };
        let bind = k.bind_views(d, &op, v).unwrap();
        let _ = &bias;
        let reps = 200;
        let mut best = f64::MAX;
        for _ in 0..3 {
            let mut enc = d.create_command_encoder(&Default::default());
            { let mut pass = enc.begin_compute_pass(&Default::default()); for _ in 0..reps { k.encode(&mut pass, &bind); } }
            let t = Instant::now();
            gpu.queue.submit([enc.finish()]);
            d.poll(wgpu::PollType::wait_indefinitely()).unwrap();
            best = best.min(t.elapsed().as_secs_f64() / reps as f64);
        }
        println!("{name:28} {:8.1} us", best * 1e6);
    }
}
