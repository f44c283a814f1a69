//! The on-disk pipeline cache: a corrupt or truncated file never fails a run, a saved
//! file is whole and is taken up again, and GL (no driver cache) is told apart.

mod common;

use common::{gpu, upload};

use gradguard::kernels::KernelCache;
use gradguard::{ClipPolicy, GradClip, GradSet, NonFinitePolicy, NormKind};

#[test]
fn corrupt_files_are_ignored_and_saved_files_are_whole() {
    let g = gpu();
    let dir = std::env::temp_dir().join(format!("gradguard-pipeline-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cache = KernelCache::of(&g.device);
    let key = gradguard::wgpu::util::pipeline_cache_key(&g.info);
    let supported = g.device.features().contains(gradguard::wgpu::Features::PIPELINE_CACHE) && key.is_some();
    if g.info.backend != gradguard::wgpu::Backend::Gl {
        assert!(supported, "{:?} should keep a pipeline cache", g.info.backend);
    }
    let path = key.map(|k| dir.join(k));
    if let Some(path) = &path {
        std::fs::write(path, b"GGPIPE01 and then garbage, not a cache").unwrap();
    }
    assert_eq!(cache.use_disk_cache(&g.device, &dir), supported);

    // Pipelines compile through the (empty) cache: nothing fails.
    let grads = upload(&[2.0; 3000]);
    let policy = ClipPolicy::GlobalNorm { max_norm: 1.0, kind: NormKind::L2 };
    GradClip::new(&g.device, &GradSet::packed(&grads, &[1000, 2000]), policy, NonFinitePolicy::SkipStep).unwrap();
    cache.save_disk_cache().unwrap();
    let Some(path) = path else { return };
    if !supported {
        return;
    }
    let saved = std::fs::read(&path).unwrap();
    assert_eq!(&saved[..8], b"GGPIPE01");
    assert_eq!(u64::from_le_bytes(saved[8..16].try_into().unwrap()), saved.len() as u64 - 24);
    assert!(saved.len() > 24, "the driver's cache holds the pipelines just built");

    // A truncated copy is ignored as the garbage was; the whole file is taken up.
    std::fs::write(&path, &saved[..saved.len() / 2]).unwrap();
    assert!(cache.use_disk_cache(&g.device, &dir));
    std::fs::write(&path, &saved).unwrap();
    assert!(cache.use_disk_cache(&g.device, &dir));
    cache.save_disk_cache().unwrap();
    assert!(!path.with_extension("tmp").exists(), "no temporary file is left behind");
    std::fs::remove_dir_all(&dir).unwrap();
}
