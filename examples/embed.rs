//! A plain wgpu program that owns its instance, device, queue and buffers, and uses
//! gradguard's norm + clip inside its own command encoder, next to its own compute pass.
//! It checks the result against a CPU computation and exits non-zero on a mismatch.
//!
//!     cargo run --release --example embed

use gradguard::wgpu::{self, util::DeviceExt};
use gradguard::{ClipPolicy, GradClip, GradSet, GradView, NonFinitePolicy, NormKind};

/// The app's own kernel: fills its "gradient" buffer (a stand-in for a backward pass).
const PRODUCE: &str = r#"
@group(0) @binding(0) var<storage, read_write> g: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&g)) { g[id.x] = (f32(id.x % 97u) - 48.0) * 0.25; }
}
"#;

const MAX_NORM: f32 = 1.0;

fn produced(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i % 97) as f32 - 48.0) * 0.25).collect()
}

fn main() {
    if let Err(e) = run() {
        eprintln!("embed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    // The application's own device: gradguard needs no feature and the default limits.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: gradguard::required_features(),
        required_limits: gradguard::required_limits(),
        ..Default::default()
    }))?;
    println!("adapter: {}", adapter.get_info().name);

    // The app's buffers: weights-gradients at a non-zero offset in a shared arena, and a
    // bias gradient in a buffer of its own, which the app's kernel also writes.
    let usage = gradguard::GRAD_USAGES | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let weights: Vec<f32> = (0..3000).map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0).collect();
    let mut arena = vec![0.0f32; 64]; // the app keeps other data in front
    arena.extend(&weights);
    let arena_buf = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("app arena"),
        contents: bytemuck::cast_slice(&arena),
        usage,
    });
    let bias_len = 1001;
    let bias_buf = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app bias grad"),
        size: bias_len * 4,
        usage,
        mapped_at_creation: false,
    });

    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("produce"),
        source: wgpu::ShaderSource::Wgsl(PRODUCE.into()),
    });
    let produce = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("produce"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let produce_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("produce"),
        layout: &produce.get_bind_group_layout(0),
        entries: &[wgpu::BindGroupEntry { binding: 0, resource: bias_buf.as_entire_binding() }],
    });

    // gradguard: built once for this layout, then only recorded.
    let set = GradSet::new(vec![
        GradView { buffer: arena_buf.clone(), offset: 64 * 4, len: weights.len() as u64 },
        GradView { buffer: bias_buf.clone(), offset: 0, len: bias_len },
    ]);
    let policy = ClipPolicy::GlobalNorm { max_norm: MAX_NORM, kind: NormKind::L2 };
    let clip = GradClip::new(&device, &set, policy, NonFinitePolicy::SkipStep)?;

    // One encoder: the app's pass, then gradguard's norm + clip. One submit.
    let mut encoder = device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&produce);
        pass.set_bind_group(0, &produce_group, &[]);
        pass.dispatch_workgroups((bias_len as u32).div_ceil(64), 1, 1);
    }
    clip.encode(&mut encoder);
    queue.submit([encoder.finish()]);

    let stats = gradguard::readback::read_stats_blocking(&device, &queue, clip.stats_buffer())?;
    let arena_after = gradguard::readback::read_f32s(&device, &queue, &arena_buf)?;
    let bias_after = gradguard::readback::read_f32s(&device, &queue, &bias_buf)?;

    // The same on the CPU, in f64.
    let bias = produced(bias_len as usize);
    let norm = weights.iter().chain(&bias).map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let coef = (MAX_NORM as f64 / (norm + 1e-6)).min(1.0);
    let close = |a: f32, b: f64| (a as f64 - b).abs() <= 1e-5 * b.abs().max(1e-6);
    let mut bad = 0;
    bad += (!close(stats.norm, norm)) as usize;
    bad += arena_after[..64].iter().filter(|&&x| x != 0.0).count(); // untouched prefix
    bad += arena_after[64..].iter().zip(&weights).filter(|(&a, &w)| !close(a, w as f64 * coef)).count();
    bad += bias_after.iter().zip(&bias).filter(|(&a, &b)| !close(a, b as f64 * coef)).count();
    println!("pre-clip norm: gpu {} cpu {norm:.6}; coefficient {coef:.6}; mismatches: {bad}", stats.norm);
    if bad > 0 {
        return Err(format!("{bad} values differ from the CPU computation").into());
    }
    println!("ok");
    Ok(())
}
