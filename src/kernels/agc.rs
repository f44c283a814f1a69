//! `shaders/agc.wgsl`: adaptive gradient clipping, one workgroup per unit.

use super::{dispatch, layout, pipeline, range, scoped, storage_entry};
use crate::error::{Error, Result};
use super::grad_set::GradSet;
use crate::shaders;

/// One unit, as `Unit` in the shader.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Unit {
    grad_start: u32,
    param_start: u32,
    len: u32,
    pad: u32,
}

/// Units whose gradients and parameters fit one bound window each: one dispatch.
struct Group {
    grads: (wgpu::Buffer, u64, u64),
    params: (wgpu::Buffer, u64, u64),
    first_unit: u64,
    units: Vec<Unit>,
}

/// AGC over a gradient set and its mirror parameter set, bound once.
pub struct AgcPlan {
    pipeline: wgpu::ComputePipeline,
    groups: Vec<(wgpu::BindGroup, u32)>,
}

impl AgcPlan {
    /// Validates and binds AGC over `grads` (clipped in place) against `params`, reading the
    /// skip flag from `stats` (a [`GradNorm`](crate::GradNorm) stats buffer) and binding at
    /// most `chunk_bytes` at once. Errors: `Error::NotPositive` for `clipping`,
    /// `Error::OutOfRange` for `eps`; `Error::Incompatible` for a unit length that does not
    /// divide its segment; `Error::Aliased` for a parameter buffer that is also a gradient
    /// buffer; `Error::LengthMismatch` for shapes that differ; the set errors of [`GradSet::validate`](crate::GradSet::validate).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        device: &wgpu::Device,
        grads: &GradSet,
        params: &GradSet,
        unit_lens: &[u64],
        clipping: f32,
        eps: f32,
        zero_nonfinite: bool,
        stats: &wgpu::Buffer,
        chunk_bytes: u64,
        workgroup_size: u32,
    ) -> Result<Self> {
        crate::error::check_positive("AGC clipping", clipping)?;
        crate::error::check_non_negative("AGC eps", eps)?;
        params.validate(wgpu::BufferUsages::STORAGE)?;
        grads.check_same_shape(params, "AGC parameters")?;
        // Gradients are written while parameters are read: they may not share a buffer.
        for g in grads.views() {
            for p in params.views() {
                super::check_distinct(&[("an AGC gradient", &g.buffer, true), ("an AGC parameter", &p.buffer, false)])?;
            }
        }
        if unit_lens.len() != grads.segment_count() {
            return Err(Error::LengthMismatch {
                what: "AGC unit lengths (one per segment)".into(),
                expected: grads.segment_count() as u64,
                actual: unit_lens.len() as u64,
            });
        }
        let align = device.limits().min_storage_buffer_offset_alignment.max(16) as u64;
        let mut groups: Vec<Group> = Vec::new();
        for (i, ((g, p), &unit)) in grads.views().iter().zip(params.views()).zip(unit_lens).enumerate() {
            if unit == 0 || g.len % unit != 0 || unit * 4 > chunk_bytes - align {
                let other = format!("segment {i} of {} elements", g.len);
                let why = "a unit length must be positive, divide its segment's length and fit one binding";
                return Err(Error::Incompatible { setting: "AGC unit length", other, why });
            }
            for k in 0..g.len / unit {
                let (gs, ps, bytes) = (g.offset + 4 * k * unit, p.offset + 4 * k * unit, 4 * unit);
                let fits = groups.last().is_some_and(|last| {
                    let within = |(buf, off, _): &(wgpu::Buffer, u64, u64), b: &wgpu::Buffer, s: u64| {
                        buf == b && s >= *off && s + bytes - off <= chunk_bytes
                    };
                    within(&last.grads, &g.buffer, gs) && within(&last.params, &p.buffer, ps)
                });
                if !fits {
                    groups.push(Group {
                        grads: (g.buffer.clone(), gs / align * align, 0),
                        params: (p.buffer.clone(), ps / align * align, 0),
                        first_unit: 0,
                        units: Vec::new(),
                    });
                }
                let last = groups.last_mut().expect("pushed above");
                last.grads.2 = last.grads.2.max(gs + bytes - last.grads.1);
                last.params.2 = last.params.2.max(ps + bytes - last.params.1);
                last.units.push(Unit {
                    grad_start: ((gs - last.grads.1) / 4) as u32,
                    param_start: ((ps - last.params.1) / 4) as u32,
                    len: unit as u32,
                    pad: 0,
                });
            }
        }
        // One table for all groups, each run starting at an aligned offset.
        let mut table: Vec<Unit> = Vec::new();
        for group in &mut groups {
            table.resize(table.len().next_multiple_of(align as usize / 16), Unit::default());
            group.first_unit = table.len() as u64;
            table.extend(&group.units);
        }
        let layout = layout(
            device,
            "agc",
            &[storage_entry(0, false), storage_entry(1, true), storage_entry(2, true), storage_entry(3, true)],
        );
        let constants = [
            ("CLIPPING", clipping as f64),
            ("EPS", eps as f64),
            ("ZERO_NONFINITE", zero_nonfinite as u8 as f64),
            ("WG", workgroup_size as f64),
        ];
        let pipeline = pipeline(device, &shaders::AGC, "agc", &[&layout], &constants)?;
        let table = super::buffer_init(device, "gradguard agc units", bytemuck::cast_slice(&table), wgpu::BufferUsages::STORAGE)?;
        let groups = scoped(device, "binding AGC buffers", || {
            groups
                .iter()
                .map(|g| {
                    let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some("agc"),
                        layout: &layout,
                        entries: &[
                            wgpu::BindGroupEntry { binding: 0, resource: range(&g.grads.0, g.grads.1, g.grads.2) },
                            wgpu::BindGroupEntry { binding: 1, resource: range(&g.params.0, g.params.1, g.params.2) },
                            wgpu::BindGroupEntry {
                                binding: 2,
                                resource: range(&table, g.first_unit * 16, g.units.len() as u64 * 16),
                            },
                            wgpu::BindGroupEntry { binding: 3, resource: stats.as_entire_binding() },
                        ],
                    });
                    (bind, g.units.len() as u32)
                })
                .collect()
        })?;
        Ok(Self { pipeline, groups })
    }

    /// Dispatches [`AgcPlan::encode`] records: one per group of units bound together.
    pub fn dispatch_count(&self) -> usize {
        self.groups.len()
    }

    /// Records the AGC dispatches into `pass`, after the norm that wrote `stats`.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        for (group, units) in &self.groups {
            dispatch(pass, &self.pipeline, group, *units);
        }
    }
}
