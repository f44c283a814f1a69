use gradguard::kernels::matmul::{MatmulKernel, MatmulOp, Epilogue, MatmulOperands};
use gradguard::{wgpu, Gpu};
use std::time::Instant;
fn main() {
    let gpu = Gpu::new().unwrap();
    let d = &gpu.device;
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
    let mk = |n: u64| d.create_buffer(&wgpu::BufferDescriptor { label: None, size: 4 * n, usage, mapped_at_creation: false });
    let k = MatmulKernel::new(d).unwrap();
    let a = mk(1 << 20); let b = mk(1 << 20); let c = mk(1 << 20); let aux = mk(1 << 16);
    for t in [30u32, 200] {
        let rows = 64 * t;
        for (name, op, has_aux) in [
            ("in proj", MatmulOp::linear_forward(rows, 2, 32), false),
            ("dW_x+db", MatmulOp::linear_weight_grad(rows, 2, 32).with(Epilogue::BiasGrad), true),
            ("dW_h", MatmulOp::linear_weight_grad(rows, 32, 32), false),
        ] {
            let v = MatmulOperands { a: (&a).into(), b: (&b).into(), bias: None, c: (&c).into(), aux: has_aux.then(|| (&aux).into()) };
            let bind = k.bind_views(d, &op, v).unwrap();
            let mut best = f64::MAX;
            for _ in 0..3 {
                let mut enc = d.create_command_encoder(&Default::default());
                { let mut pass = enc.begin_compute_pass(&Default::default()); for _ in 0..10 { k.encode(&mut pass, &bind); } }
                let t0 = Instant::now();
                gpu.queue.submit([enc.finish()]);
                d.poll(wgpu::PollType::wait_indefinitely()).unwrap();
                best = best.min(t0.elapsed().as_secs_f64() / 10.0);
            }
            println!("T={t} {name}: {:.0} us", best * 1e6);
        }
    }
}
