//! Every shader parses and validates with naga: runs with no GPU and no driver at all.

use gradguard::shaders;
use gradguard::wgpu::naga;

#[test]
fn every_shader_parses_and_validates() {
    for shader in shaders::ALL {
        let module = naga::front::wgsl::parse_str(shader.source)
            .unwrap_or_else(|e| panic!("{}.wgsl does not parse:\n{}", shader.name, e.emit_to_string(shader.source)));
        let mut validator =
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::default());
        validator
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}.wgsl does not validate:\n{}", shader.name, e.emit_to_string(shader.source)));
        for entry in shader.entry_points {
            assert!(
                module.entry_points.iter().any(|e| e.name == *entry),
                "{}.wgsl has no entry point `{entry}`",
                shader.name
            );
        }
    }
}

#[test]
fn every_wgsl_file_is_registered() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let stem = name.trim_end_matches(".wgsl");
        assert!(
            shaders::PRELUDES.contains(&stem) || shaders::ALL.iter().any(|s| s.name == stem),
            "shaders/{name} is not in shaders::ALL"
        );
    }
}
