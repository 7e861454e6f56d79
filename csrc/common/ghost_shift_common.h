// The arithmetic of the ghost shift (GhostSR, Eq. 1-2): one source for the
// CUDA kernels (cuda/ghost_shift_cuda.cu, thin loops over these bodies), the
// CPU kernels (their edges and epilogue) and the grid emulation that runs the
// CUDA kernels on the CPU in the tests (tests/csrc/).
//
// A ghost channel c is intrinsic channel src[c] moved by (dy, dx):
//     out[n, c, y, x] = in[n, src[c], y - dy, x - dx]
// and zero where (y - dy, x - dx) falls outside the image. The learnable shift
// scores the (2d+1)^2 candidates of a window; candidate (i, j) reads
// in[y + i - d, x + j - d] (a correlation, like a depthwise conv with padding
// d), i.e. it is the shift (dy, dx) = (d - i, d - j).
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define GHOSTSR_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define GHOSTSR_HOST_DEVICE inline
#endif

// A kernel's check of an index it is about to read through. The CUDA kernels
// define it as CUDA_KERNEL_ASSERT, the grid emulation as an exception; the
// CPU kernels check their arguments on the host instead.
#ifndef GHOSTSR_KERNEL_ASSERT
#define GHOSTSR_KERNEL_ASSERT(cond) ((void)0)
#endif

namespace ghostsr {

// The half-open range [lo, hi) of output positions along one axis of length
// `size` whose source position (pos - shift) lies inside [0, size). Empty
// (lo >= hi) when |shift| >= size.
struct ShiftRange {
  int64_t lo;
  int64_t hi;
  GHOSTSR_HOST_DEVICE bool empty() const { return lo >= hi; }
  GHOSTSR_HOST_DEVICE int64_t length() const { return hi > lo ? hi - lo : 0; }
};

GHOSTSR_HOST_DEVICE ShiftRange shifted_range(int64_t size, int64_t shift) {
  const int64_t lo = shift > 0 ? shift : 0;
  const int64_t hi = shift < 0 ? size + shift : size;
  return ShiftRange{lo, hi < lo ? lo : hi};
}

// True when source position pos - shift lies inside [0, size). In 64 bits: a
// shift need not fit a kernel's index type.
GHOSTSR_HOST_DEVICE bool source_inside(int64_t pos, int64_t shift,
                                       int64_t size) {
  const int64_t s = pos - shift;
  return s >= 0 && s < size;
}

// Candidate (i, j) of a (2d+1)x(2d+1) window as a shift (dy, dx).
GHOSTSR_HOST_DEVICE int64_t candidate_shift(int64_t index, int64_t max_offset) {
  return max_offset - index;
}

// The epilogue fused into the forward pass: out = act(scale * moved +
// residual), where moved is 0 outside the image and act is ReLU or the
// identity. `v < 0` (not `v > 0`) keeps NaN, as torch.relu does. `scale` is
// finite (the op refuses others), so 0 outside stays 0.
template <typename A>
GHOSTSR_HOST_DEVICE A epilogue(A moved, A residual, A scale, bool relu) {
  const A v = scale * moved + residual;
  return relu && v < A(0) ? A(0) : v;
}

// The (dy, dx) of every output channel, read through the strides of a
// (C_out, 2) int64 tensor: an expanded per-layer offset needs no copy.
struct Offsets {
  const int64_t* data;
  int64_t stride_c;
  int64_t stride_k;
  GHOSTSR_HOST_DEVICE int64_t dy(int64_t c) const { return data[c * stride_c]; }
  GHOSTSR_HOST_DEVICE int64_t dx(int64_t c) const {
    return data[c * stride_c + stride_k];
  }
};

// The sizes of a shift: N images of H x W, Ci intrinsic (input) and Co output
// channels, in the kernels' index type.
template <typename index_t>
struct Dims {
  index_t N, Ci, Co, H, W;
};

// The coordinates of element i of an (N, C, H, W) tensor walked in NCHW
// order, or in NHWC order (kPixels: channels_last): three divisions per
// element in the index type (each modulo reuses its division's quotient).
template <bool kPixels, typename index_t>
struct Coords {
  index_t n, c, y, x;
  GHOSTSR_HOST_DEVICE Coords(index_t i, index_t C, index_t H, index_t W) {
    if (kPixels) {
      c = i % C;
      const index_t pixel = i / C;
      x = pixel % W;
      const index_t row = pixel / W;
      y = row % H;
      n = row / H;
    } else {
      x = i % W;
      const index_t row = i / W;
      y = row % H;
      const index_t plane = row / H;
      c = plane % C;
      n = plane / C;
    }
  }
};

// The offset of element (n, c, y, x) of a dense (N, C, H, W) tensor in NCHW
// order, or NHWC (kPixels).
template <bool kPixels, typename index_t>
GHOSTSR_HOST_DEVICE index_t dense_offset(index_t n, index_t c, index_t y,
                                         index_t x, index_t C, index_t H,
                                         index_t W) {
  return kPixels ? ((n * H + y) * W + x) * C + c : ((n * C + c) * H + y) * W + x;
}

// The fused epilogue's arguments: `res` has the output's dense layout (null:
// no residual).
template <typename T, typename A>
struct EpilogueArgs {
  const T* res;
  A scale;
  bool relu;
};

// Forward, one element: output element p (the idx-th in the walk order) of
// the shift of `in` (dense in the walk order); kFused applies the epilogue,
// else the value is moved bit-exactly (zero outside).
template <bool kPixels, bool kFused, typename T, typename A, typename index_t>
GHOSTSR_HOST_DEVICE T forward_element(const Coords<kPixels, index_t>& p,
                                      int64_t idx, const T* in,
                                      const int64_t* src, Offsets off,
                                      EpilogueArgs<T, A> ep,
                                      Dims<index_t> d) {
  const int64_t s = src[p.c];
  GHOSTSR_KERNEL_ASSERT(s >= 0 && s < d.Ci);  // before narrowing it
  const int64_t dy = off.dy(p.c), dx = off.dx(p.c);
  const bool inside = source_inside(p.y, dy, d.H) && source_inside(p.x, dx, d.W);
  T moved = T(0);
  if (inside)
    moved = in[dense_offset<kPixels, index_t>(
        p.n, static_cast<index_t>(s), static_cast<index_t>(p.y - dy),
        static_cast<index_t>(p.x - dx), d.Ci, d.H, d.W)];
  if (!kFused) return moved;
  return static_cast<T>(epilogue<A>(inside ? static_cast<A>(moved) : A(0),
                                    ep.res ? static_cast<A>(ep.res[idx]) : A(0),
                                    ep.scale, ep.relu));
}

// Input gradient, one element: grad_input[n, ci, y, x] (p, walked with
// C = Ci) is the sum over the output channels c reading ci of
// grad_output[n, c, y + dy[c], x + dx[c]]; `grad_out` is dense in the same
// order as the walk. The readers of ci are perm[rowptr[ci] : rowptr[ci + 1]]
// (inverse_map); rowptr[Ci] < Co means some src lies outside [0, Ci).
template <bool kPixels, typename T, typename A, typename index_t>
GHOSTSR_HOST_DEVICE T backward_element(const Coords<kPixels, index_t>& p,
                                       const T* grad_out, const int64_t* perm,
                                       const int64_t* rowptr, Offsets off,
                                       Dims<index_t> d) {
  GHOSTSR_KERNEL_ASSERT(rowptr[0] == 0 && rowptr[d.Ci] == d.Co);
  A acc = A(0);
  for (int64_t k = rowptr[p.c]; k < rowptr[p.c + 1]; ++k) {
    const index_t c = static_cast<index_t>(perm[k]);
    // The output position that reads (y, x): (y + dy, x + dx).
    const int64_t dy = off.dy(c), dx = off.dx(c);
    if (source_inside(p.y, -dy, d.H) && source_inside(p.x, -dx, d.W))
      acc += static_cast<A>(grad_out[dense_offset<kPixels, index_t>(
          p.n, c, static_cast<index_t>(p.y + dy), static_cast<index_t>(p.x + dx),
          d.Co, d.H, d.W)]);
  }
  return static_cast<T>(acc);
}

// Weight gradient, one thread's part: for output channel c (source s) and
// the candidate shift (dy, dx), the sum over the flat (n, y, x) positions
// begin, begin + step, ... < end of grad_output[n, c, y, x] * input[n, s,
// y - dy, x - dx], the terms whose source lies inside the image (a non-finite
// input value only reaches the candidates that read it). NCHW tensors.
template <typename T, typename A, typename index_t>
GHOSTSR_HOST_DEVICE A weight_grad_partial(int64_t begin, int64_t end,
                                          int64_t step, const T* grad_out,
                                          const T* in, index_t c, index_t s,
                                          int64_t dy, int64_t dx,
                                          Dims<index_t> d) {
  A acc = A(0);
  const index_t plane = d.H * d.W;
  for (int64_t idx = begin; idx < end; idx += step) {
    const index_t i = static_cast<index_t>(idx);
    const index_t n = i / plane;
    const index_t q = i - n * plane;
    const index_t y = q / d.W;
    const index_t x = q - y * d.W;
    if (source_inside(y, dy, d.H) && source_inside(x, dx, d.W))
      acc += static_cast<A>(grad_out[(n * d.Co + c) * plane + q]) *
             static_cast<A>(in[(n * d.Ci + s) * plane +
                               static_cast<index_t>(y - dy) * d.W +
                               static_cast<index_t>(x - dx)]);
  }
  return acc;
}

// The combine step of the weight gradient's reductions (warp, block and the
// final sum over a candidate's splits, always in the same order).
template <typename A>
GHOSTSR_HOST_DEVICE A combine(A a, A b) {
  return a + b;
}

// ---------------------------------------------------------------------------
// Launch configuration of the CUDA kernels: computed here, on the host, for
// the launchers and for the grid emulation test alike.
// ---------------------------------------------------------------------------
constexpr int kThreads = 256;
constexpr int kWarp = 32;
// The element kernels' grids stay within one grid dimension's 65535 blocks
// (grid-stride loops cover the rest): enough to fill any GPU.
constexpr int64_t kMaxBlocks = 65535;
// A weight-gradient block reduces at least this many positions per thread
// before the spatial reduction is split over more blocks.
constexpr int64_t kWeightGradItemsPerThread = 16;

struct LaunchConfig {
  int64_t grid_x;
  int64_t grid_y;
  int64_t block;
  // Weight gradient: the positions each split (blockIdx.y) reduces.
  int64_t chunk;
};

// Forward and input-gradient kernels: one thread per element, grid-stride.
inline LaunchConfig element_launch(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return LaunchConfig{blocks < kMaxBlocks ? blocks : kMaxBlocks, 1, kThreads,
                      0};
}

// Weight gradient: blockIdx.x is a (listed channel, candidate) pair, of which
// there are `pairs`; blockIdx.y one of grid_y consecutive chunks of the
// `positions` = N * H * W positions, so a layer of few channels still fills
// the GPU. Each block writes one partial sum; weight_grad_finish adds a
// pair's partials in split order: the same result every run.
inline LaunchConfig weight_grad_launch(int64_t pairs, int64_t positions) {
  const int64_t per_block = kThreads * kWeightGradItemsPerThread;
  // Splits so that about 4 * 132 (SMs of a large GPU) blocks run at once.
  int64_t splits = (positions + per_block - 1) / per_block;
  const int64_t wanted = (4 * 132 + pairs - 1) / (pairs > 0 ? pairs : 1);
  if (splits > wanted) splits = wanted;
  if (splits > kMaxBlocks) splits = kMaxBlocks;
  if (splits < 1) splits = 1;
  const int64_t chunk = (positions + splits - 1) / splits;
  return LaunchConfig{pairs, splits, kThreads, chunk};
}

}  // namespace ghostsr
