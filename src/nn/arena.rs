//! `ParamArena`: where each tensor of a model lives in its packed buffers. Parameters,
//! gradients and optimizer state each take one device buffer with the same layout, so one
//! norm, one clip and one optimizer dispatch cover every tensor (a segment table names
//! them), and every tensor can still be bound alone.

use super::TensorSpec;
use crate::grad_set::{GradSet, GradView};
use crate::kernels::{View, VIEW_ALIGN};

/// Elements between tensor starts: each starts at a multiple of [`VIEW_ALIGN`] bytes, so
/// any kernel can bind it as a view on any device.
const ALIGN_ELEMS: u64 = VIEW_ALIGN / 4;

/// The packed layout of a model's tensors, in [`super::ModelSpec::tensors`] order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamArena {
    /// (first element, elements) of each tensor.
    ranges: Vec<(u64, u64)>,
    /// Elements of the whole buffer, padding included.
    len: u64,
}

#[allow(clippy::len_without_is_empty)] // never empty
impl ParamArena {
    /// Packs `tensors`, each padded to the next [`VIEW_ALIGN`]-byte boundary.
    pub fn new(tensors: &[TensorSpec]) -> Self {
        let mut ranges = Vec::with_capacity(tensors.len());
        let mut next = 0;
        for t in tensors {
            ranges.push((next, t.len() as u64));
            next = (next + t.len() as u64).next_multiple_of(ALIGN_ELEMS);
        }
        Self { ranges, len: next.max(1) }
    }

    /// (first element, elements) of each tensor.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// Elements of one packed buffer, padding included (at least one: buffers are never
    /// empty).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Tensor `t` of a packed buffer, as a kernel operand.
    pub fn view<'a>(&self, buffer: &'a wgpu::Buffer, t: usize) -> View<'a> {
        View::at(buffer, 4 * self.ranges[t].0)
    }

    /// A packed buffer as a norm/clip set: one segment per tensor.
    pub fn set(&self, buffer: &wgpu::Buffer) -> GradSet {
        GradSet::new(self.ranges.iter().map(|&(start, len)| GradView { buffer: buffer.clone(), offset: 4 * start, len }).collect())
    }

    /// `values` (one Vec per tensor) laid out as the packed buffer, padding zeroed.
    pub fn pack(&self, values: &[Vec<f32>]) -> Vec<f32> {
        let mut out = vec![0.0; self.len as usize];
        for (&(start, len), v) in self.ranges.iter().zip(values) {
            out[start as usize..(start + len) as usize].copy_from_slice(&v[..len as usize]);
        }
        out
    }

    /// A packed buffer's contents cut back into one Vec per tensor.
    pub fn unpack(&self, packed: &[f32]) -> Vec<Vec<f32>> {
        self.ranges.iter().map(|&(start, len)| packed[start as usize..(start + len) as usize].to_vec()).collect()
    }
}
