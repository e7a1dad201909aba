//! A convolution's geometry ([`ConvGeom`]) and the strategy chosen once from it ([`Plan`]):
//! how the patches are held (planes, or a patch matrix), what the forward keeps for the
//! backward, and how the backward gets dW and dx. The forward and backward `match` on the plan.
//!
//! Shapes (see the module header): x (N, C, H, W), weight (OC, C, KH, KW), y (N, OC, OH, OW);
//! CKK = C*KH*KW, OHW = OH*OW.

use super::kernels::MR;
use super::layout::{patch_rows, patch_stride, plane_len};
use crate::ops::simd::LANES;

/// The sizes of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub oc: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub padding: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    pub fn new(
        (c, h, w): (usize, usize, usize),
        (oc, kh, kw): (usize, usize, usize),
        stride: usize,
        padding: usize,
    ) -> ConvGeom {
        assert!(stride > 0, "conv2d: stride must be positive");
        assert!(
            h + 2 * padding >= kh && w + 2 * padding >= kw,
            "conv2d: kernel {kh}x{kw} larger than padded input {h}x{w} (+2*{padding})"
        );
        let oh = (h + 2 * padding - kh) / stride + 1;
        let ow = (w + 2 * padding - kw) / stride + 1;
        ConvGeom {
            c,
            h,
            w,
            oc,
            kh,
            kw,
            stride,
            padding,
            oh,
            ow,
        }
    }
    pub fn ckk(&self) -> usize {
        self.c * self.kh * self.kw
    }
    pub fn ohw(&self) -> usize {
        self.oh * self.ow
    }
    pub fn in_size(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn out_size(&self) -> usize {
        self.oc * self.ohw()
    }
}

/// How a layer is computed, chosen once per geometry by [`Plan::for_geometry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Plan {
    /// Narrow kernel rows (KW*C < 16, such as the first layer's single channel) are not copied
    /// into a patch matrix, where each value would be a scalar copy: each sample is kept as a
    /// zero-padded plane (Hp, Wp, C), and the kernels read patch value (m, k) straight from it
    /// at offset base(m) + koff(k) (see `layout::Taps`). The forward keeps the planes for the
    /// backward.
    Planes {
        /// CKK <= 16: dW is one block of 16 columns, so a backward without dx makes one pass
        /// over dy (the ReLU mask, dbias and dW together).
        single_block: bool,
    },
    /// C a multiple of 16, so that each 16-column block of a patch row is one kernel tap's
    /// channels, contiguous in x. No patch matrix: the forward reads each output pixel's taps
    /// straight from x's pixels (`tap_rows_times_matrix`), and so does the backward for dW
    /// (`tap_columns_times_matrix`), which keeps only x.
    WholeTaps {
        /// The output channels fit four vectors (the dy block's fixed stride of 16, 32 or 64),
        /// so dx gets each block of dy Wr as soon as it is computed, added straight into the
        /// image (`rows_times_matrix_into_image`), without a dA matrix; else dA and row2im.
        dx_into_image: bool,
    },
    /// Any other layer: the patch matrix (im2row), kept by the forward for the backward; dx
    /// through dA (M, CKK) and row2im.
    PatchMatrix,
}

impl Plan {
    /// The plan for `g`.
    pub(super) fn for_geometry(g: &ConvGeom) -> Plan {
        if g.kw * g.c < LANES {
            Plan::Planes {
                single_block: g.ckk() <= MR,
            }
        } else if g.c.is_multiple_of(LANES) {
            Plan::WholeTaps {
                dx_into_image: g.oc <= 4 * LANES,
            }
        } else {
            Plan::PatchMatrix
        }
    }

    /// Length of the patches of a chunk of `b` samples: planes, a patch matrix, or none
    /// ([`Plan::WholeTaps`] layers read x).
    pub(super) fn chunk_patch_len(self, g: &ConvGeom, b: usize) -> usize {
        match self {
            Plan::Planes { .. } => b * plane_len(g),
            Plan::WholeTaps { .. } => 0,
            Plan::PatchMatrix => patch_rows(g, b) * patch_stride(g.ckk()),
        }
    }

    /// Whether the forward keeps its patches for the backward ([`Plan::WholeTaps`] layers
    /// keep x instead).
    pub(super) fn keeps_patches(self) -> bool {
        match self {
            Plan::Planes { .. } | Plan::PatchMatrix => true,
            Plan::WholeTaps { .. } => false,
        }
    }

    /// Length of what the backward reads of a chunk of `b` samples: the forward's patches, or
    /// x itself for [`Plan::WholeTaps`] layers.
    pub(super) fn chunk_saved_len(self, g: &ConvGeom, b: usize) -> usize {
        if self.keeps_patches() {
            self.chunk_patch_len(g, b)
        } else {
            b * g.in_size()
        }
    }

    /// Length of the dA matrix (M, CKK) for the dx of a chunk of `b` samples: none when dx
    /// goes straight into the image.
    pub(super) fn da_len(self, g: &ConvGeom, b: usize) -> usize {
        match self {
            Plan::WholeTaps { dx_into_image: true } => 0,
            Plan::Planes { .. } | Plan::WholeTaps { dx_into_image: false } | Plan::PatchMatrix => {
                patch_rows(g, b) * patch_stride(g.ckk())
            }
        }
    }
}
