//! A set of gradient tensors on the device, and how it is cut into tiles and bound chunks.

use crate::error::{Error, Result};
use super::range;

/// One gradient tensor (a *segment*): `len` f32 elements of `buffer` from byte `offset`.
#[derive(Clone, Debug)]
pub struct GradView {
    /// The buffer holding the tensor (needs `STORAGE` usage).
    pub buffer: wgpu::Buffer,
    /// Byte offset of the first element (a multiple of 4).
    pub offset: u64,
    /// Number of f32 elements.
    pub len: u64,
}

/// The tensors one norm covers: separate buffers, one flat buffer cut by a segment table,
/// or any mix. Segments keep the order given; per-segment results follow it.
#[derive(Clone, Debug)]
pub struct GradSet {
    views: Vec<GradView>,
}

impl GradSet {
    /// A set of `views`, in order. Nothing is checked here: [`GradSet::validate`] (run by
    /// [`GradNorm::new`](crate::GradNorm::new) and [`GradClip::new`](crate::GradClip::new))
    /// refuses bad layouts.
    pub fn new(views: Vec<GradView>) -> Self {
        Self { views }
    }

    /// Segments of `lens` elements laid end to end in `buffer` from offset 0.
    pub fn packed(buffer: &wgpu::Buffer, lens: &[u64]) -> Self {
        let mut offset = 0;
        let views = lens
            .iter()
            .map(|&len| {
                let view = GradView { buffer: buffer.clone(), offset, len };
                offset += len * 4;
                view
            })
            .collect();
        Self { views }
    }

    /// The segments, in order.
    pub fn views(&self) -> &[GradView] {
        &self.views
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.views.len()
    }

    /// Total f32 elements over all segments.
    pub fn element_count(&self) -> u64 {
        self.views.iter().map(|v| v.len).sum()
    }

    /// Checks what the kernels rely on; `usage` is what the buffers must allow.
    pub fn validate(&self, usage: wgpu::BufferUsages) -> Result<()> {
        if self.views.is_empty() {
            return Err(Error::EmptySet);
        }
        if self.views.len() > u32::MAX as usize / 2 {
            return Err(Error::AboveMax { what: "segments", value: self.views.len() as u64, max: u32::MAX as u64 / 2 });
        }
        for (segment, v) in self.views.iter().enumerate() {
            if v.offset % 4 != 0 {
                return Err(Error::MisalignedOffset { segment, offset: v.offset });
            }
            let end = v.len.checked_mul(4).and_then(|b| b.checked_add(v.offset)).unwrap_or(u64::MAX);
            if end > v.buffer.size() {
                return Err(Error::OutOfBounds { segment, start: v.offset, end, buffer_size: v.buffer.size() });
            }
            let missing = usage - v.buffer.usage();
            if !missing.is_empty() {
                return Err(Error::MissingUsage { segment, missing });
            }
        }
        // Overlaps would count elements twice and let two clip workgroups race on them.
        let mut order: Vec<usize> = (0..self.views.len()).filter(|&i| self.views[i].len > 0).collect();
        order.sort_by(|&a, &b| (&self.views[a].buffer, self.views[a].offset).cmp(&(&self.views[b].buffer, self.views[b].offset)));
        for pair in order.windows(2) {
            let (a, b) = (&self.views[pair[0]], &self.views[pair[1]]);
            if a.buffer == b.buffer && a.offset + 4 * a.len > b.offset {
                return Err(Error::OverlappingSegments { first: pair[0].min(pair[1]), second: pair[0].max(pair[1]) });
            }
        }
        Ok(())
    }

    /// Mirrors of this set's shape: same segment count and lengths.
    pub fn check_same_shape(&self, other: &GradSet, what: &str) -> Result<()> {
        if self.views.len() != other.views.len() {
            return Err(Error::LengthMismatch {
                what: format!("{what}: segment count"),
                expected: self.views.len() as u64,
                actual: other.views.len() as u64,
            });
        }
        for (i, (a, b)) in self.views.iter().zip(&other.views).enumerate() {
            if a.len != b.len {
                return Err(Error::LengthMismatch {
                    what: format!("{what}: length of segment {i}"),
                    expected: a.len,
                    actual: b.len,
                });
            }
        }
        Ok(())
    }
}

/// A slice of one segment processed by one workgroup. Matches `Tile` in the shaders.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Tile {
    pub segment: u32,
    /// First element, counted from the start of the bound chunk.
    pub start: u32,
    pub count: u32,
    pub partial: u32,
}

/// One bound window of a buffer and the tiles that fall into it: one dispatch.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    pub buffer: wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
    /// Where this window's tiles start in the tile table, in entries (aligned for binding).
    pub first_tile: u64,
    pub tile_count: u32,
}

/// The tile cut of a set: a fixed function of the layout, so reductions are deterministic.
#[derive(Clone, Debug)]
pub(crate) struct TilePlan {
    /// Tiles of all windows, each window's run starting at an aligned entry.
    pub tiles: Vec<Tile>,
    pub windows: Vec<Window>,
    /// Per segment: (first partial, partial count); a segment's partials are contiguous.
    pub ranges: Vec<[u32; 2]>,
    pub partial_count: u32,
}

impl TilePlan {
    /// Cuts every segment at `chunk_bytes` boundaries of its buffer (each chunk is bound on
    /// its own) and then into tiles of at most `tile_elems` elements. `tile_align` is the
    /// storage-offset alignment in tile entries.
    pub fn new(set: &GradSet, tile_elems: u32, chunk_bytes: u64, tile_align: u64) -> Result<Self> {
        assert!(tile_elems.is_multiple_of(4) && chunk_bytes.is_multiple_of(256) && chunk_bytes > 0);
        // Distinct buffers in first-seen order; each (buffer, chunk) becomes one window.
        let mut buffers: Vec<&wgpu::Buffer> = Vec::new();
        let mut per_window: std::collections::BTreeMap<(usize, u64), Vec<Tile>> = Default::default();
        let mut ranges = Vec::with_capacity(set.views.len());
        let mut partial: u32 = 0;
        for (segment, v) in set.views.iter().enumerate() {
            let b = match buffers.iter().position(|b| *b == &v.buffer) {
                Some(i) => i,
                None => {
                    buffers.push(&v.buffer);
                    buffers.len() - 1
                }
            };
            let first = partial;
            let (mut byte, end) = (v.offset, v.offset + v.len * 4);
            while byte < end {
                let chunk = byte / chunk_bytes;
                let piece_end = end.min((chunk + 1) * chunk_bytes);
                let chunk_start = chunk * chunk_bytes;
                let mut e = byte;
                while e < piece_end {
                    let count = ((piece_end - e) / 4).min(tile_elems as u64);
                    per_window.entry((b, chunk)).or_default().push(Tile {
                        segment: segment as u32,
                        start: ((e - chunk_start) / 4) as u32,
                        count: count as u32,
                        partial,
                    });
                    partial = partial
                        .checked_add(1)
                        .ok_or_else(|| Error::TooLarge {
                            what: "the set's tile plan (raise tile_elems)".into(),
                            amount: 1 << 32,
                            unit: "tiles",
                            limit: u32::MAX as u64,
                            limit_name: "what a u32 tile index counts",
                        })?;
                    e += count * 4;
                }
                byte = piece_end;
            }
            ranges.push([first, partial - first]);
        }
        let mut tiles = Vec::new();
        let mut windows = Vec::new();
        for ((b, chunk), run) in per_window {
            let buffer = buffers[b];
            let offset = chunk * chunk_bytes;
            tiles.resize(tiles.len().next_multiple_of(tile_align as usize), Tile::default());
            windows.push(Window {
                buffer: buffer.clone(),
                offset,
                size: chunk_bytes.min(buffer.size() - offset),
                first_tile: tiles.len() as u64,
                tile_count: run.len() as u32,
            });
            tiles.extend(run);
        }
        Ok(Self { tiles, windows, ranges, partial_count: partial })
    }
}

/// The three bindings of one window: the data as vec4s and as f32s, and the window's run
/// of the tile table.
pub(crate) struct WindowViews<'a> {
    pub vec4: wgpu::BindingResource<'a>,
    pub scalar: wgpu::BindingResource<'a>,
    pub tiles: wgpu::BindingResource<'a>,
}

/// Where a writing kernel's vec4 view of a window ends and its f32 view begins: the
/// window's last multiple of 256 bytes, the largest storage-offset alignment wgpu allows,
/// so the f32 view's offset is valid on every device.
pub(crate) const SPLIT_ALIGN: u64 = 256;

/// How a window's data is bound.
#[derive(Clone, Copy)]
pub(crate) enum DataViews<'a> {
    /// For kernels that only read: vec4s over the aligned part and f32s over the whole
    /// window (read-only bindings may overlap). The 16-byte placeholder stands in for the
    /// vec4 view of a window too small to hold one.
    Overlapping(&'a wgpu::Buffer),
    /// For kernels that write (WebGPU forbids overlapping writable bindings): vec4s below
    /// the window's last multiple of [`SPLIT_ALIGN`] bytes, f32s from there to its end.
    /// Two distinct 16-byte placeholders stand in for an empty side.
    Disjoint(&'a wgpu::Buffer, &'a wgpu::Buffer),
}

impl TilePlan {
    /// `tiles` is the uploaded tile table.
    pub(crate) fn window_views<'a>(
        &self,
        w: &'a Window,
        tiles: Option<&'a wgpu::Buffer>,
        views: DataViews<'a>,
    ) -> WindowViews<'a> {
        let tiles = tiles.expect("a plan with windows has tiles");
        let view = |start: u64, end: u64, placeholder: &'a wgpu::Buffer| match end > start {
            true => range(&w.buffer, w.offset + start, end - start),
            false => placeholder.as_entire_binding(),
        };
        let (vec4, scalar) = match views {
            DataViews::Overlapping(placeholder) => {
                (view(0, w.size / 16 * 16, placeholder), range(&w.buffer, w.offset, w.size / 4 * 4))
            }
            DataViews::Disjoint(vec4_placeholder, scalar_placeholder) => {
                let split = w.size / SPLIT_ALIGN * SPLIT_ALIGN;
                (view(0, split, vec4_placeholder), view(split, w.size / 4 * 4, scalar_placeholder))
            }
        };
        WindowViews { vec4, scalar, tiles: range(tiles, w.first_tile * 16, w.tile_count as u64 * 16) }
    }
}
