//! Every wire format the host and the shaders share is defined once in Rust and mirrored in
//! WGSL: the norm's stats header and segment records (`kernels::norm::StatsHeader`,
//! `SegmentRecord` against the `H_*`, `S_*` word indices of `common.wgsl`), the non-finite
//! policy codes (`kernels::norm::policy` against `POLICY_*`), and the norm's uniform block
//! (`NormParams` against the shader's `Params`, by naga's reflection of its layout). Changing
//! one side alone fails here, with no GPU.

use std::collections::BTreeMap;
use std::mem::offset_of;

use gradguard::kernels::norm::{policy, NormParams, SegmentRecord, StatsHeader, HEADER_WORDS, SEGMENT_WORDS};
use gradguard::shaders;
use gradguard::wgpu::naga;

/// Every `u32` constant of the norm shader (with `common.wgsl` prepended), by name.
fn constants(module: &naga::Module) -> BTreeMap<String, u32> {
    module
        .constants
        .iter()
        .filter_map(|(_, c)| match module.global_expressions[c.init] {
            naga::Expression::Literal(naga::Literal::U32(v)) => Some((c.name.clone()?, v)),
            _ => None,
        })
        .collect()
}

fn norm_module() -> naga::Module {
    naga::front::wgsl::parse_str(shaders::NORM.source).expect("norm.wgsl parses")
}

#[test]
fn the_stats_header_and_segment_records_match_the_shaders_word_indices() {
    let c = constants(&norm_module());
    let word = |bytes: usize| (bytes / 4) as u32;
    let header = [
        ("H_NORM", word(offset_of!(StatsHeader, norm))),
        ("H_COEF", word(offset_of!(StatsHeader, coef))),
        ("H_SKIP", word(offset_of!(StatsHeader, skip))),
        ("H_NONFINITE", word(offset_of!(StatsHeader, nonfinite))),
        ("H_NAN", word(offset_of!(StatsHeader, nan))),
        ("H_INF", word(offset_of!(StatsHeader, inf))),
        ("H_FIRST_NONFINITE", word(offset_of!(StatsHeader, first_nonfinite))),
        ("H_L2", word(offset_of!(StatsHeader, l2))),
        ("H_L1", word(offset_of!(StatsHeader, l1))),
        ("H_LINF", word(offset_of!(StatsHeader, linf))),
        ("H_SEGMENTS", word(offset_of!(StatsHeader, segments))),
        ("H_FINITE_NORM", word(offset_of!(StatsHeader, finite_norm))),
        ("H_LIMIT", word(offset_of!(StatsHeader, limit))),
        ("H_HALTED", word(offset_of!(StatsHeader, halted))),
    ];
    for (name, rust) in header {
        assert_eq!(c.get(name), Some(&rust), "{name}: the shader's word index against StatsHeader's field");
    }
    let shader_fields = c.keys().filter(|k| k.starts_with("H_")).count();
    assert_eq!(shader_fields, header.len(), "every H_* word of the shader is a field of StatsHeader");
    let segment = [
        ("S_L2", word(offset_of!(SegmentRecord, l2))),
        ("S_L1", word(offset_of!(SegmentRecord, l1))),
        ("S_LINF", word(offset_of!(SegmentRecord, linf))),
        ("S_NONFINITE", word(offset_of!(SegmentRecord, nonfinite))),
    ];
    for (name, rust) in segment {
        assert_eq!(c.get(name), Some(&rust), "{name}: the shader's word index against SegmentRecord's field");
    }
    assert_eq!(c.get("HEADER_WORDS").copied(), Some(HEADER_WORDS as u32));
    assert_eq!(c.get("SEGMENT_WORDS").copied(), Some(SEGMENT_WORDS as u32));
}

#[test]
fn the_policy_codes_match() {
    let c = constants(&norm_module());
    for (name, rust) in [("POLICY_PROPAGATE", policy::PROPAGATE), ("POLICY_ERROR", policy::ERROR), ("POLICY_SKIP", policy::SKIP), ("POLICY_ZERO", policy::ZERO)] {
        assert_eq!(c.get(name), Some(&rust), "{name}");
    }
}

#[test]
fn the_norm_params_block_matches_the_shaders_params_struct() {
    let module = norm_module();
    let (_, ty) = module.types.iter().find(|(_, t)| t.name.as_deref() == Some("Params")).expect("a Params struct");
    let naga::TypeInner::Struct { members, span } = &ty.inner else { panic!("Params is a struct") };
    let rust = [
        ("segment_count", offset_of!(NormParams, segment_count)),
        ("kind", offset_of!(NormParams, kind)),
        ("nonfinite", offset_of!(NormParams, nonfinite)),
        ("clipping", offset_of!(NormParams, clipping)),
        ("max_norm", offset_of!(NormParams, max_norm)),
        ("eps", offset_of!(NormParams, eps)),
        ("big_segments", offset_of!(NormParams, big_segments)),
        ("pad", offset_of!(NormParams, pad)),
    ];
    let shader: Vec<(String, usize)> = members.iter().map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize)).collect();
    let rust: Vec<(String, usize)> = rust.iter().map(|(n, o)| (n.to_string(), *o)).collect();
    assert_eq!(shader, rust, "Params members and offsets");
    assert_eq!(*span as usize, std::mem::size_of::<NormParams>());
}
