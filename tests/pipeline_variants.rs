//! Every pipeline variant the library builds, checked against its shader without a driver's
//! say: after building the trainers, clips and benchmarks of a representative workload, each
//! (shader, entry point, override constants, layouts) in the device's kernel cache is
//! validated by naga with its constants applied, and every binding its entry point uses is
//! declared by its bind-group layout with the same kind (uniform, read-only or writable
//! storage). A binding or an override changed on one side alone fails here.
#![cfg(feature = "train")]

mod common;

use common::gpu;
use gradguard::kernels::KernelCache;
use gradguard::lab::{exploding_mlp, exploding_rnn};
use gradguard::train::{ClipSetting, OptimizerChoice, TrainConfig, Trainer};
use gradguard::wgpu::{self, naga};
use gradguard::{shaders, GradNorm, GradSet, NonFinitePolicy, NormConfig, TileLayout};

/// Builds what the library builds: trainers with every clip setting, optimizer and
/// non-finite policy, norms of both tile layouts and several workgroup sizes, the copy kernel.
fn build_the_workload() {
    let g = gpu();
    let clips = ["none", "norm:1", "per-layer:1", "value:0.5", "agc:0.01", "zclip", "autoclip"];
    for (k, clip) in clips.iter().enumerate() {
        for base in [exploding_mlp(2, 0), exploding_rnn(2, 30, 0), exploding_rnn(2, 200, 0)] {
            let mut config = TrainConfig { clip: clip.parse::<ClipSetting>().unwrap(), ..base };
            config.optimizer = if k % 2 == 0 { OptimizerChoice::AdamW } else { OptimizerChoice::Sgd { momentum: 0.9 } };
            config.on_nonfinite = [NonFinitePolicy::Propagate, NonFinitePolicy::ZeroNonFinite, NonFinitePolicy::SkipStep][k % 3];
            drop(Trainer::new(g, config).unwrap());
        }
    }
    let mut with_bn = exploding_mlp(2, 0);
    if let gradguard::train::ModelChoice::Mlp { batchnorm, .. } = &mut with_bn.model {
        *batchnorm = true;
    }
    drop(Trainer::new(g, with_bn).unwrap());
    let data = common::upload(&vec![1.0; 10_000]);
    for (layout, wg) in [(TileLayout::Workgroup, 256), (TileLayout::Invocation, 16), (TileLayout::Workgroup, 1), (TileLayout::Invocation, 7)] {
        let config = NormConfig { tile_layout: Some(layout), workgroup_size: Some(wg), ..NormConfig::default() };
        drop(GradNorm::new(&g.device, &GradSet::packed(&data, &[6000, 4000]), &config).unwrap());
    }
    drop(gradguard::kernels::copy::CopyKernel::new(&g.device).unwrap());
}

/// What a layout entry lets a shader do with a buffer.
fn kind_of(entry: &wgpu::BindGroupLayoutEntry) -> &'static str {
    match entry.ty {
        wgpu::BindingType::Buffer { ty: wgpu::BufferBindingType::Uniform, .. } => "uniform",
        wgpu::BindingType::Buffer { ty: wgpu::BufferBindingType::Storage { read_only: true }, .. } => "read-only storage",
        wgpu::BindingType::Buffer { ty: wgpu::BufferBindingType::Storage { read_only: false }, .. } => "writable storage",
        _ => "other",
    }
}

fn kind_in_shader(space: naga::AddressSpace) -> &'static str {
    match space {
        naga::AddressSpace::Uniform => "uniform",
        naga::AddressSpace::Storage { access } if access.contains(naga::StorageAccess::STORE) => "writable storage",
        naga::AddressSpace::Storage { .. } => "read-only storage",
        _ => "other",
    }
}

#[test]
fn every_pipeline_variant_validates_and_matches_its_layouts() {
    build_the_workload();
    let variants = KernelCache::of(&gpu().device).variants();
    let mut shaders_seen = std::collections::BTreeSet::new();
    for v in &variants {
        let shader = shaders::ALL.iter().find(|s| s.name == v.shader).expect("a registered shader");
        let module = naga::front::wgsl::parse_str(shader.source).unwrap();
        let flags = naga::valid::ValidationFlags::all();
        let info = naga::valid::Validator::new(flags, naga::valid::Capabilities::default()).validate(&module).unwrap();
        let mut constants = naga::back::PipelineConstants::default();
        for (name, value) in &v.constants {
            constants.insert(name.clone(), *value);
        }
        let what = format!("{}::{} with {:?}", v.shader, v.entry, v.constants);
        let (processed, processed_info) =
            naga::back::pipeline_constants::process_overrides(&module, &info, Some((naga::ShaderStage::Compute, &v.entry)), &constants)
                .unwrap_or_else(|e| panic!("{what}: the constants do not apply: {e:?}"));
        naga::valid::Validator::new(flags, naga::valid::Capabilities::default())
            .validate(&processed)
            .unwrap_or_else(|e| panic!("{what} does not validate: {e:?}"));
        let (index, _) = processed.entry_points.iter().enumerate().find(|(_, e)| e.name == v.entry).expect("the entry point");
        let uses = processed_info.get_entry_point(index);
        for (handle, global) in processed.global_variables.iter() {
            let Some(binding) = &global.binding else { continue };
            if uses[handle].is_empty() {
                continue;
            }
            let layout = v.layouts.get(binding.group as usize).unwrap_or_else(|| panic!("{what}: no layout for group {}", binding.group));
            let entry = layout
                .iter()
                .find(|e| e.binding == binding.binding)
                .unwrap_or_else(|| panic!("{what}: binding {} ({:?}) is not in its layout", binding.binding, global.name));
            assert_eq!(kind_of(entry), kind_in_shader(global.space), "{what}: binding {} ({:?})", binding.binding, global.name);
        }
        shaders_seen.insert(v.shader);
    }
    let all: std::collections::BTreeSet<_> = shaders::ALL.iter().map(|s| s.name).collect();
    assert_eq!(shaders_seen, all, "the workload builds a pipeline of every shader");
    assert!(variants.len() >= 40, "{} variants", variants.len());
}
