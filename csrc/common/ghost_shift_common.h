// Index arithmetic of the ghost shift (GhostSR, Eq. 1-2), shared by the CPU
// and CUDA kernels.
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

// True when source position pos - shift lies inside [0, size).
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
// identity. `v < 0` (not `v > 0`) keeps NaN, as torch.relu does.
template <typename A>
GHOSTSR_HOST_DEVICE A epilogue(A moved, A residual, A scale, bool relu) {
  const A v = scale * moved + residual;
  return relu && v < A(0) ? A(0) : v;
}

}  // namespace ghostsr
