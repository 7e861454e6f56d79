// CUDA kernels of the ghost shift: one coalesced pass per op, grid-stride
// loops, the current stream and a device guard; the candidate-offset gradient
// is a block reduction per (channel, candidate), with no global atomics.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <torch/library.h>

#include <initializer_list>
#include <limits>
#include <optional>
#include <utility>

#include "../ghost_shift.h"
#include "ghost_shift_common.h"

namespace ghostsr {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
// block_sum reduces one warp's partial sums with a single warp.
static_assert(kThreads % kWarp == 0 && kThreads / kWarp <= kWarp,
              "block_sum needs a block of whole warps, at most 32 of them");

int blocks_for(int64_t n) {
  const int64_t max_blocks = 65535;
  return static_cast<int>(std::min<int64_t>(max_blocks, (n + kThreads - 1) / kThreads));
}

// Index arithmetic runs in 32 bits where every element offset of every tensor
// a kernel touches fits (a GPU has no integer divider: a 64-bit division or
// modulo costs several times a 32-bit one, and the element kernels do three
// per element, which would make a copy-speed op compute-bound). The
// grid-stride loops count in 64 bits either way, so a step past the end
// cannot overflow. Sizes of 2^31 elements and more take the 64-bit kernels.
int64_t element_extent(const at::Tensor& t) {
  if (t.numel() == 0) return 0;
  int64_t extent = 1;
  for (int64_t d = 0; d < t.dim(); ++d) extent += (t.size(d) - 1) * t.stride(d);
  return extent;
}

bool fits_32_bits(std::initializer_list<at::Tensor> tensors) {
  for (const auto& t : tensors)
    if (t.defined() && element_extent(t) > std::numeric_limits<int32_t>::max())
      return false;
  return true;
}

// Calls f(int32_t{}) or f(int64_t{}): the index type as a value, for a
// generic lambda to take with decltype.
template <typename F>
void with_index_type(bool use_32_bits, F&& f) {
  if (use_32_bits)
    f(int32_t{});
  else
    f(int64_t{});
}

// Offsets are read through their strides, so an expanded (stride 0) per-layer
// offset needs no copy.
struct OffsetView {
  const int64_t* data;
  int64_t stride_c;
  int64_t stride_k;
  __device__ __forceinline__ int64_t dy(int64_t c) const { return data[c * stride_c]; }
  __device__ __forceinline__ int64_t dx(int64_t c) const { return data[c * stride_c + stride_k]; }
};

OffsetView offset_view(const at::Tensor& offsets64) {
  return OffsetView{offsets64.data_ptr<int64_t>(), offsets64.stride(0),
                    offsets64.stride(1)};
}

// Where the forward kernels write output element (n, c, y, x): through the
// strides of `out`, so that a view (a channel slice of a concatenation
// buffer) is written in place.
template <typename T, typename index_t>
struct OutView {
  T* data;
  index_t sn, sc, sy, sx;
  __device__ __forceinline__ T& at(index_t n, index_t c, index_t y, index_t x) const {
    return data[n * sn + c * sc + y * sy + x * sx];
  }
};

template <typename T, typename index_t>
OutView<T, index_t> out_view(const at::Tensor& out) {
  return OutView<T, index_t>{out.data_ptr<T>(), static_cast<index_t>(out.stride(0)),
                             static_cast<index_t>(out.stride(1)),
                             static_cast<index_t>(out.stride(2)),
                             static_cast<index_t>(out.stride(3))};
}

// Whether the source (y - dy, x - dx) of an output position lies inside the
// image. In 64 bits: an offset need not fit the index type.
__device__ __forceinline__ bool source_in_image(int64_t y, int64_t x, int64_t dy,
                                                int64_t dx, int64_t H, int64_t W) {
  return source_inside(y, dy, H) && source_inside(x, dx, W);
}

// The fused epilogue of the forward kernels: out = act(scale * moved +
// residual); `res` has the output's layout (null: no residual).
template <typename T>
struct ForwardEpilogue {
  using acc_t = at::opmath_type<T>;
  const T* __restrict__ res;
  acc_t scale;
  bool relu;
  __device__ __forceinline__ T operator()(bool inside, T moved, int64_t idx) const {
    const acc_t m = inside ? static_cast<acc_t>(moved) : acc_t(0);
    const acc_t r = res ? static_cast<acc_t>(res[idx]) : acc_t(0);
    return static_cast<T>(epilogue(m, r, scale, relu));
  }
};

// The coordinates of the i-th element of an (N, C, H, W) tensor walked in
// NCHW order, or in NHWC order (kPixels).
template <bool kPixels, typename index_t>
struct Coords {
  index_t n, c, y, x;
  __device__ __forceinline__ Coords(index_t i, index_t C, index_t H, index_t W) {
    if (kPixels) {
      c = i % C;
      x = (i / C) % W;
      y = (i / (C * W)) % H;
      n = i / (C * W * H);
    } else {
      x = i % W;
      y = (i / W) % H;
      c = (i / (H * W)) % C;
      n = i / (H * W * C);
    }
  }
};

// One thread per output element, visited in the order of `in` and `res`
// (NHWC for kPixels, else NCHW); kFused = false: a plain move (bit-exact
// copies, zeros outside). The loop counter is 64-bit; the coordinates are
// computed in index_t.
template <typename T, typename index_t, bool kPixels, bool kFused>
__global__ void shift_forward(const T* __restrict__ in, OutView<T, index_t> out,
                              const int64_t* __restrict__ src, OffsetView off,
                              ForwardEpilogue<T> ep, index_t Ci, index_t Co, index_t H,
                              index_t W, int64_t total) {
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)blockDim.x * gridDim.x) {
    const Coords<kPixels, index_t> p(static_cast<index_t>(idx), Co, H, W);
    const index_t s = static_cast<index_t>(src[p.c]);
    CUDA_KERNEL_ASSERT(s >= 0 && s < Ci);
    const int64_t dy = off.dy(p.c), dx = off.dx(p.c);
    const bool inside = source_in_image(p.y, p.x, dy, dx, H, W);
    T moved = T(0);
    if (inside) {
      const index_t ys = static_cast<index_t>(p.y - dy);
      const index_t xs = static_cast<index_t>(p.x - dx);
      moved = in[kPixels ? ((p.n * H + ys) * W + xs) * Ci + s
                         : ((p.n * Ci + s) * H + ys) * W + xs];
    }
    out.at(p.n, p.c, p.y, p.x) = kFused ? ep(inside, moved, idx) : moved;
  }
}

// grad_input[n, ci, y, x] = sum over the output channels c reading ci of
// grad_output[n, c, y + dy[c], x + dx[c]]; each thread owns one element.
template <typename T, typename index_t>
__global__ void shift_backward_nchw(const T* __restrict__ grad_out, T* __restrict__ grad_in,
                                    const int64_t* __restrict__ perm,
                                    const int64_t* __restrict__ rowptr, OffsetView off,
                                    index_t Ci, index_t Co, index_t H, index_t W,
                                    int64_t total) {
  using acc_t = at::opmath_type<T>;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)blockDim.x * gridDim.x) {
    const Coords<false, index_t> p(static_cast<index_t>(idx), Ci, H, W);
    acc_t acc = 0;
    for (int64_t k = rowptr[p.c]; k < rowptr[p.c + 1]; ++k) {
      const index_t c = static_cast<index_t>(perm[k]);
      // The output position that reads (y, x): (y + dy, x + dx).
      const int64_t dy = off.dy(c), dx = off.dx(c);
      if (source_in_image(p.y, p.x, -dy, -dx, H, W)) {
        const index_t yo = static_cast<index_t>(p.y + dy);
        const index_t xo = static_cast<index_t>(p.x + dx);
        acc += static_cast<acc_t>(grad_out[((p.n * Co + c) * H + yo) * W + xo]);
      }
    }
    grad_in[idx] = static_cast<T>(acc);
  }
}

// The sum over a block of exactly kThreads threads (the kernels using it are
// declared __launch_bounds__(kThreads) and launched with kThreads); the
// result is valid in thread 0.
template <typename A>
__device__ A block_sum(A v) {
  __shared__ A warp_sums[kThreads / kWarp];
  for (int delta = kWarp / 2; delta > 0; delta >>= 1)
    v += __shfl_down_sync(0xffffffff, v, delta);
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = threadIdx.x < kThreads / kWarp ? warp_sums[threadIdx.x] : A(0);
  if (warp == 0)
    for (int delta = kWarp / 2; delta > 0; delta >>= 1)
      v += __shfl_down_sync(0xffffffff, v, delta);
  return v;
}

// One block per (listed channel g, candidate k): the sum over n, y, x of
// grad_output[n, c, y, x] * input[n, src[c], y + i - d, x + j - d].
template <typename T, typename index_t>
__global__ void __launch_bounds__(kThreads)
    shift_weight_grad(const T* __restrict__ grad_out, const T* __restrict__ in,
                      const int64_t* __restrict__ src, const int64_t* __restrict__ channels,
                      at::opmath_type<T>* __restrict__ result, index_t N, index_t Ci,
                      index_t Co, index_t H, index_t W, int64_t max_offset) {
  using acc_t = at::opmath_type<T>;
  const int64_t K = 2 * max_offset + 1;
  const int64_t g = blockIdx.x / (K * K);
  const int64_t k = blockIdx.x % (K * K);
  const int64_t dy = candidate_shift(k / K, max_offset);
  const int64_t dx = candidate_shift(k % K, max_offset);
  const int64_t c64 = channels[g];
  CUDA_KERNEL_ASSERT(c64 >= 0 && c64 < Co);
  const index_t c = static_cast<index_t>(c64);
  const index_t s = static_cast<index_t>(src[c]);
  CUDA_KERNEL_ASSERT(s >= 0 && s < Ci);
  acc_t acc = 0;
  const index_t plane = H * W;
  const int64_t total = static_cast<int64_t>(N) * plane;
  for (int64_t idx = threadIdx.x; idx < total; idx += blockDim.x) {
    const index_t i = static_cast<index_t>(idx);
    const index_t n = i / plane;
    const index_t p = i - n * plane;
    const index_t y = p / W;
    const index_t x = p - y * W;
    if (source_in_image(y, x, dy, dx, H, W))
      acc += static_cast<acc_t>(grad_out[(n * Co + c) * plane + p]) *
             static_cast<acc_t>(in[(n * Ci + s) * plane +
                                   static_cast<index_t>(y - dy) * W +
                                   static_cast<index_t>(x - dx)]);
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) result[blockIdx.x] = acc;
}

// A device-side assert would leave the CUDA context unusable, so index
// tensors (one small tensor per layer) are range-checked on the host, with
// the CPU's message. The range is read back once per tensor and version
// (index_range), so a model's layers sync with the host on their first call
// only. While a CUDA graph is being captured no read back is possible: a
// tensor not seen before is left to the kernels' asserts.
bool host_checks_possible() {
  return c10::cuda::currentStreamCaptureStatusMayInitCtx() ==
         c10::cuda::CaptureStatus::None;
}

void check_src_on_host(const at::Tensor& src, int64_t in_channels) {
  if (const auto range = index_range(src, host_checks_possible()))
    check_src_values(range->first, range->second, in_channels);
}

// Launches the forward into `out`; `in` and `res` are contiguous in the
// format of the kernel's order (`pixels`: NHWC), which is also the order in
// which consecutive threads visit the output (coalesced when `out` has it).
void launch_forward(const at::Tensor& in, const at::Tensor& src,
                    const at::Tensor& offsets, const at::Tensor& res, double scale,
                    bool relu, bool pixels, at::Tensor& out) {
  const int64_t Ci = in.size(1), Co = out.size(1);
  const int64_t H = out.size(2), W = out.size(3);
  const int64_t total = out.numel();
  if (total == 0) return;
  const auto src64 = src.to(at::kLong).contiguous();
  const auto off64 = offsets.to(at::kLong);
  const bool fused = res.defined() || relu || scale != 1.0;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(),
                                  "ghost_shift_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const ForwardEpilogue<scalar_t> ep{
        res.defined() ? res.data_ptr<scalar_t>() : nullptr, static_cast<acc_t>(scale),
        relu};
    with_index_type(fits_32_bits({in, res, out}), [&](auto index_tag) {
      using index_t = decltype(index_tag);
      auto kernel = pixels ? (fused ? shift_forward<scalar_t, index_t, true, true>
                                    : shift_forward<scalar_t, index_t, true, false>)
                           : (fused ? shift_forward<scalar_t, index_t, false, true>
                                    : shift_forward<scalar_t, index_t, false, false>);
      kernel<<<blocks_for(total), kThreads, 0, stream>>>(
          in.data_ptr<scalar_t>(), out_view<scalar_t, index_t>(out),
          src64.data_ptr<int64_t>(), offset_view(off64), ep, static_cast<index_t>(Ci),
          static_cast<index_t>(Co), static_cast<index_t>(H), static_cast<index_t>(W),
          total);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

at::Tensor ghost_shift_cuda(const at::Tensor& input, const at::Tensor& src,
                            const at::Tensor& offsets,
                            const std::optional<at::Tensor>& residual, double scale,
                            bool relu) {
  const int64_t Co = check_forward_args(input, src, offsets, residual);
  const c10::cuda::CUDAGuard guard(input.device());
  check_src_on_host(src, input.size(1));
  const bool pixels = use_channels_last(input);
  const auto fmt = format_of(pixels);
  auto out = at::empty({input.size(0), Co, input.size(2), input.size(3)},
                       input.options().memory_format(fmt));
  launch_forward(input.contiguous(fmt), src, offsets,
                 residual.has_value() ? residual->contiguous(fmt) : at::Tensor(), scale,
                 relu, pixels, out);
  return out;
}

// Any strides of `out` are written in place; the kernel's order follows them.
void ghost_shift_into_cuda(const at::Tensor& input, const at::Tensor& src,
                           const at::Tensor& offsets,
                           const std::optional<at::Tensor>& residual, double scale,
                           bool relu, at::Tensor out) {
  const int64_t Co = check_forward_args(input, src, offsets, residual);
  check_out_arg(out, input, Co);
  const c10::cuda::CUDAGuard guard(input.device());
  check_src_on_host(src, input.size(1));
  const bool pixels =
      write_order(out, use_channels_last(input)) == WriteOrder::kPixels;
  const auto fmt = format_of(pixels);
  launch_forward(unaliased(input, out).contiguous(fmt), src, offsets,
                 residual.has_value() ? unaliased(*residual, out).contiguous(fmt)
                                      : at::Tensor(),
                 scale, relu, pixels, out);
}

at::Tensor ghost_shift_backward_cuda(const at::Tensor& grad_output, const at::Tensor& src,
                                     const at::Tensor& offsets, int64_t in_channels) {
  check_backward_args(grad_output, src, offsets, in_channels);
  const c10::cuda::CUDAGuard guard(grad_output.device());
  check_src_on_host(src, in_channels);
  const int64_t N = grad_output.size(0), Co = grad_output.size(1);
  const int64_t H = grad_output.size(2), W = grad_output.size(3);
  const int64_t Ci = in_channels;
  const auto go = grad_output.contiguous();
  const auto inv = inverse_map(src, Ci);
  const auto off64 = offsets.to(at::kLong);
  auto grad_input = at::empty({N, Ci, H, W}, grad_output.options());
  const int64_t total = grad_input.numel();
  if (total == 0) return grad_input;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, go.scalar_type(),
                                  "ghost_shift_backward_cuda", [&] {
    with_index_type(fits_32_bits({go, grad_input}), [&](auto index_tag) {
      using index_t = decltype(index_tag);
      shift_backward_nchw<scalar_t, index_t><<<blocks_for(total), kThreads, 0, stream>>>(
          go.data_ptr<scalar_t>(), grad_input.data_ptr<scalar_t>(),
          inv.perm.data_ptr<int64_t>(), inv.rowptr.data_ptr<int64_t>(),
          offset_view(off64), static_cast<index_t>(Ci), static_cast<index_t>(Co),
          static_cast<index_t>(H), static_cast<index_t>(W), total);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return grad_input;
}

at::Tensor ghost_shift_weight_grad_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                        const at::Tensor& src, const at::Tensor& channels,
                                        int64_t max_offset) {
  check_weight_grad_args(grad_output, input, src, channels, max_offset);
  const c10::cuda::CUDAGuard guard(input.device());
  check_src_on_host(src, input.size(1));
  if (const auto range = index_range(channels, host_checks_possible()))
    check_channel_values(range->first, range->second, grad_output.size(1));
  const int64_t N = input.size(0), Ci = input.size(1);
  const int64_t H = input.size(2), W = input.size(3);
  const int64_t Co = grad_output.size(1);
  const int64_t K = 2 * max_offset + 1;
  const auto go = grad_output.contiguous();
  const auto in = input.contiguous();
  const auto src64 = src.to(at::kLong).contiguous();
  const auto ch64 = channels.to(at::kLong).contiguous();
  const int64_t G = ch64.numel();
  // In the accumulation type, as on the CPU.
  auto result = at::empty(
      {G, K, K}, input.options().dtype(at::toOpMathType(input.scalar_type())));
  if (G == 0) return result;
  // One block per (channel, candidate).
  TORCH_CHECK_VALUE(G * K * K <= std::numeric_limits<int32_t>::max(),
                    "ghost_shift_weight_grad: len(channels) * (2 * max_offset + 1)^2 = ",
                    G * K * K, " exceeds the CUDA grid limit of 2^31 - 1 blocks");
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(),
                                  "ghost_shift_weight_grad_cuda", [&] {
    with_index_type(fits_32_bits({go, in}), [&](auto index_tag) {
      using index_t = decltype(index_tag);
      shift_weight_grad<scalar_t, index_t>
          <<<static_cast<unsigned int>(G * K * K), kThreads, 0, stream>>>(
              go.data_ptr<scalar_t>(), in.data_ptr<scalar_t>(), src64.data_ptr<int64_t>(),
              ch64.data_ptr<int64_t>(), result.data_ptr<at::opmath_type<scalar_t>>(),
              static_cast<index_t>(N), static_cast<index_t>(Ci), static_cast<index_t>(Co),
              static_cast<index_t>(H), static_cast<index_t>(W), max_offset);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return result;
}

}  // namespace

TORCH_LIBRARY_IMPL(ghostsr, CUDA, m) {
  m.impl("ghost_shift", &ghost_shift_cuda);
  m.impl("ghost_shift_into", &ghost_shift_into_cuda);
  m.impl("ghost_shift_backward", &ghost_shift_backward_cuda);
  m.impl("ghost_shift_weight_grad", &ghost_shift_weight_grad_cuda);
}

}  // namespace ghostsr
