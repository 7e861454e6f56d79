// CUDA kernels of the ghost shift: thin grid-stride loops over the bodies of
// ghost_shift_common.h (one coalesced pass per op), launched with the
// configurations computed there, on the current stream under a device guard.
// The weight gradient is a block reduction per (channel, candidate, split of
// the positions) and a sum of the splits in a fixed order: no atomics, the
// same result every run.
//
// tests/csrc/grid_emulation.cpp compiles this file as host code, with
// tests/csrc/grid_emulation.h standing in for the CUDA runtime
// (GHOSTSR_GRID_EMULATION), and runs these kernels block by block on the CPU.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <initializer_list>
#include <limits>
#include <optional>

#ifndef GHOSTSR_GRID_EMULATION
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#define GHOSTSR_KERNEL_ASSERT(cond) CUDA_KERNEL_ASSERT(cond)
#define GHOSTSR_LAUNCH(kernel, cfg, stream)                               \
  kernel<<<dim3(static_cast<unsigned int>((cfg).grid_x),                  \
                static_cast<unsigned int>((cfg).grid_y)),                 \
           static_cast<unsigned int>((cfg).block), 0, stream>>>
#define GHOSTSR_LAUNCH_CHECK() C10_CUDA_KERNEL_LAUNCH_CHECK()
#define GHOSTSR_IMPL_LIBRARY ghostsr
#define GHOSTSR_IMPL_KEY CUDA
namespace ghostsr {
using DeviceGuard = c10::cuda::CUDAGuard;
inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream(); }
}  // namespace ghostsr
#endif

#include "../ghost_shift.h"
#include "ghost_shift_common.h"

namespace ghostsr {
namespace {

// block_sum reduces one warp's partial sums with a single warp.
static_assert(kThreads % kWarp == 0 && kThreads / kWarp <= kWarp,
              "block_sum needs a block of whole warps, at most 32 of them");

// Index arithmetic runs in 32 bits where every element offset of every tensor
// a kernel touches fits (a GPU has no integer divider: a 64-bit division
// costs several times a 32-bit one, and the element kernels do three per
// element, which would make a copy-speed op compute-bound). The grid-stride
// loops count in 64 bits either way, so a step past the end cannot overflow.
// Sizes of 2^31 elements and more take the 64-bit kernels.
int64_t index_extent(const at::Tensor& t) {
  if (t.numel() == 0) return 0;
  int64_t extent = 1;  // the largest offset + 1
  for (int64_t d = 0; d < t.dim(); ++d) extent += (t.size(d) - 1) * t.stride(d);
  // An element's coordinates are computed from its number, up to numel(),
  // which exceeds the extent where elements share memory.
  return std::max(extent, t.numel());
}

// The grid emulation lowers the limit to run the 64-bit kernels on small
// tensors.
#ifndef GHOSTSR_INDEX_32_LIMIT
#define GHOSTSR_INDEX_32_LIMIT std::numeric_limits<int32_t>::max()
#endif

bool fits_32_bits(std::initializer_list<at::Tensor> tensors) {
  for (const auto& t : tensors)
    if (t.defined() && index_extent(t) > GHOSTSR_INDEX_32_LIMIT)
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

Offsets offsets_of(const at::Tensor& offsets64) {
  return Offsets{offsets64.data_ptr<int64_t>(), offsets64.stride(0),
                 offsets64.stride(1)};
}

template <typename index_t>
Dims<index_t> dims(int64_t N, int64_t Ci, int64_t Co, int64_t H, int64_t W) {
  return Dims<index_t>{static_cast<index_t>(N), static_cast<index_t>(Ci),
                       static_cast<index_t>(Co), static_cast<index_t>(H),
                       static_cast<index_t>(W)};
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

// One thread per output element, visited in the order of `in` and the
// residual (NHWC for kPixels, else NCHW).
template <typename T, typename index_t, bool kPixels, bool kFused>
__global__ void __launch_bounds__(kThreads)
    shift_forward(const T* __restrict__ in, OutView<T, index_t> out,
                  const int64_t* __restrict__ src, Offsets off,
                  EpilogueArgs<T, at::opmath_type<T>> ep, Dims<index_t> d,
                  int64_t total) {
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)blockDim.x * gridDim.x) {
    const Coords<kPixels, index_t> p(static_cast<index_t>(idx), d.Co, d.H, d.W);
    out.at(p.n, p.c, p.y, p.x) = forward_element<kPixels, kFused>(p, idx, in, src,
                                                                  off, ep, d);
  }
}

// One thread per input-gradient element, in the order of grad_output (NHWC
// for kPixels, else NCHW).
template <typename T, typename index_t, bool kPixels>
__global__ void __launch_bounds__(kThreads)
    shift_backward(const T* __restrict__ grad_out, T* __restrict__ grad_in,
                   const int64_t* __restrict__ perm, const int64_t* __restrict__ rowptr,
                   Offsets off, Dims<index_t> d, int64_t total) {
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)blockDim.x * gridDim.x) {
    const Coords<kPixels, index_t> p(static_cast<index_t>(idx), d.Ci, d.H, d.W);
    grad_in[idx] = backward_element<kPixels, T, at::opmath_type<T>>(
        p, grad_out, perm, rowptr, off, d);
  }
}

// The sum over a block of exactly kThreads threads (the kernel using it is
// launched with kThreads); the result is valid in thread 0.
template <typename A>
__device__ A block_sum(A v) {
  __shared__ A warp_sums[kThreads / kWarp];
  for (int delta = kWarp / 2; delta > 0; delta >>= 1)
    v = combine(v, __shfl_down_sync(0xffffffff, v, delta));
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kThreads / kWarp ? warp_sums[lane] : A(0);
    for (int delta = kWarp / 2; delta > 0; delta >>= 1)
      v = combine(v, __shfl_down_sync(0xffffffff, v, delta));
  }
  return v;
}

// Block (pair, split): pair = g * K * K + k is listed channel g and candidate
// k; the block sums weight_grad_partial over chunk `split` of the N * H * W
// positions and writes it to partial[pair * splits + split].
template <typename T, typename index_t>
__global__ void __launch_bounds__(kThreads)
    shift_weight_grad(const T* __restrict__ grad_out, const T* __restrict__ in,
                      const int64_t* __restrict__ src, const int64_t* __restrict__ channels,
                      at::opmath_type<T>* __restrict__ partial, Dims<index_t> d,
                      int64_t max_offset, int64_t positions, int64_t chunk) {
  using acc_t = at::opmath_type<T>;
  const int64_t K = 2 * max_offset + 1;
  const int64_t pair = blockIdx.x;
  const int64_t c = channels[pair / (K * K)];
  GHOSTSR_KERNEL_ASSERT(c >= 0 && c < d.Co);
  const int64_t s = src[c];
  GHOSTSR_KERNEL_ASSERT(s >= 0 && s < d.Ci);
  const int64_t k = pair % (K * K);
  const int64_t begin = blockIdx.y * chunk;
  const int64_t end = begin + chunk < positions ? begin + chunk : positions;
  acc_t acc = weight_grad_partial<T, acc_t, index_t>(
      begin + threadIdx.x, end, blockDim.x, grad_out, in, static_cast<index_t>(c),
      static_cast<index_t>(s), candidate_shift(k / K, max_offset),
      candidate_shift(k % K, max_offset), d);
  acc = block_sum(acc);
  if (threadIdx.x == 0) partial[pair * gridDim.y + blockIdx.y] = acc;
}

// result[pair] = the sum of the pair's `splits` partial sums, in split order.
template <typename A>
__global__ void __launch_bounds__(kThreads)
    weight_grad_finish(const A* __restrict__ partial, A* __restrict__ result,
                       int64_t pairs, int64_t splits) {
  for (int64_t pair = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; pair < pairs;
       pair += (int64_t)blockDim.x * gridDim.x) {
    A acc = partial[pair * splits];
    for (int64_t s = 1; s < splits; ++s) acc = combine(acc, partial[pair * splits + s]);
    result[pair] = acc;
  }
}

// Launches the forward into `out`; `in` and `res` are contiguous in the
// format of the kernel's order (`pixels`: NHWC), which is also the order in
// which consecutive threads visit the output (coalesced when `out` has it).
// `src` values are checked by the kernel's assert (maps are validated where
// a layer sets or loads them; the CPU op checks every call).
void launch_forward(const at::Tensor& in, const at::Tensor& src,
                    const at::Tensor& offsets, const at::Tensor& res, double scale,
                    bool relu, bool pixels, at::Tensor& out) {
  const int64_t total = out.numel();
  if (total == 0) return;
  const auto src64 = src.to(at::kLong).contiguous();
  const auto off64 = offsets.to(at::kLong);
  const bool fused = res.defined() || relu || scale != 1.0;
  const LaunchConfig cfg = element_launch(total);
  auto stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(),
                                  "ghost_shift_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const EpilogueArgs<scalar_t, acc_t> ep{
        res.defined() ? res.data_ptr<scalar_t>() : nullptr, static_cast<acc_t>(scale),
        relu};
    with_index_type(fits_32_bits({in, res, out}), [&](auto index_tag) {
      using index_t = decltype(index_tag);
      auto kernel = pixels ? (fused ? shift_forward<scalar_t, index_t, true, true>
                                    : shift_forward<scalar_t, index_t, true, false>)
                           : (fused ? shift_forward<scalar_t, index_t, false, true>
                                    : shift_forward<scalar_t, index_t, false, false>);
      GHOSTSR_LAUNCH(kernel, cfg, stream)(
          in.data_ptr<scalar_t>(), out_view<scalar_t, index_t>(out),
          src64.data_ptr<int64_t>(), offsets_of(off64), ep,
          dims<index_t>(out.size(0), in.size(1), out.size(1), out.size(2), out.size(3)),
          total);
      GHOSTSR_LAUNCH_CHECK();
    });
  });
}

at::Tensor ghost_shift_cuda(const at::Tensor& input, const at::Tensor& src,
                            const at::Tensor& offsets,
                            const std::optional<at::Tensor>& residual, double scale,
                            bool relu) {
  const int64_t Co = check_forward_args(input, src, offsets, residual, scale);
  const DeviceGuard guard(input.device());
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
  const int64_t Co = check_forward_args(input, src, offsets, residual, scale);
  check_out_arg(out, input, Co);
  const DeviceGuard guard(input.device());
  const bool pixels =
      write_order(out, use_channels_last(input)) == WriteOrder::kPixels;
  const auto fmt = format_of(pixels);
  launch_forward(unaliased(input, out).contiguous(fmt), src, offsets,
                 residual.has_value() ? unaliased(*residual, out).contiguous(fmt)
                                      : at::Tensor(),
                 scale, relu, pixels, out);
}

// The input gradient, in the layout of grad_output (channels_last stays
// channels_last: no copy to NCHW and back).
at::Tensor ghost_shift_backward_cuda(const at::Tensor& grad_output, const at::Tensor& src,
                                     const at::Tensor& offsets, int64_t in_channels) {
  check_backward_args(grad_output, src, offsets, in_channels);
  const DeviceGuard guard(grad_output.device());
  const bool pixels = use_channels_last(grad_output);
  const auto fmt = format_of(pixels);
  const int64_t N = grad_output.size(0), Co = grad_output.size(1);
  const int64_t H = grad_output.size(2), W = grad_output.size(3);
  const int64_t Ci = in_channels;
  auto grad_input = at::empty({N, Ci, H, W}, grad_output.options().memory_format(fmt));
  const int64_t total = grad_input.numel();
  if (total == 0) return grad_input;
  const auto go = grad_output.contiguous(fmt);
  const auto inv = inverse_map(src, Ci);
  const auto off64 = offsets.to(at::kLong);
  const LaunchConfig cfg = element_launch(total);
  auto stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, go.scalar_type(),
                                  "ghost_shift_backward_cuda", [&] {
    with_index_type(fits_32_bits({go, grad_input}), [&](auto index_tag) {
      using index_t = decltype(index_tag);
      auto kernel = pixels ? shift_backward<scalar_t, index_t, true>
                           : shift_backward<scalar_t, index_t, false>;
      GHOSTSR_LAUNCH(kernel, cfg, stream)(
          go.data_ptr<scalar_t>(), grad_input.data_ptr<scalar_t>(),
          inv.perm.data_ptr<int64_t>(), inv.rowptr.data_ptr<int64_t>(),
          offsets_of(off64), dims<index_t>(N, Ci, Co, H, W), total);
      GHOSTSR_LAUNCH_CHECK();
    });
  });
  return grad_input;
}

at::Tensor ghost_shift_weight_grad_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                        const at::Tensor& src, const at::Tensor& channels,
                                        int64_t max_offset) {
  check_weight_grad_args(grad_output, input, src, channels, max_offset);
  const DeviceGuard guard(input.device());
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
  const auto acc_options = input.options().dtype(at::toOpMathType(input.scalar_type()));
  auto result = at::empty({G, K, K}, acc_options);
  if (G == 0) return result;
  TORCH_CHECK_VALUE(G * K * K <= std::numeric_limits<int32_t>::max(),
                    "ghost_shift_weight_grad: len(channels) * (2 * max_offset + 1)^2 = ",
                    G * K * K, " exceeds the CUDA grid limit of 2^31 - 1 blocks");
  const LaunchConfig cfg = weight_grad_launch(G * K * K, N * H * W);
  // One split writes the result directly; more write partial sums first.
  auto partial = cfg.grid_y == 1 ? result : at::empty({G * K * K, cfg.grid_y}, acc_options);
  auto stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(),
                                  "ghost_shift_weight_grad_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    with_index_type(fits_32_bits({go, in}), [&](auto index_tag) {
      using index_t = decltype(index_tag);
      auto kernel = shift_weight_grad<scalar_t, index_t>;
      GHOSTSR_LAUNCH(kernel, cfg, stream)(
          go.data_ptr<scalar_t>(), in.data_ptr<scalar_t>(), src64.data_ptr<int64_t>(),
          ch64.data_ptr<int64_t>(), partial.data_ptr<acc_t>(),
          dims<index_t>(N, Ci, Co, H, W), max_offset, N * H * W, cfg.chunk);
      GHOSTSR_LAUNCH_CHECK();
    });
    if (cfg.grid_y > 1) {
      auto finish = weight_grad_finish<acc_t>;
      GHOSTSR_LAUNCH(finish, element_launch(G * K * K), stream)(
          partial.data_ptr<acc_t>(), result.data_ptr<acc_t>(), G * K * K, cfg.grid_y);
      GHOSTSR_LAUNCH_CHECK();
    }
  });
  return result;
}

}  // namespace

TORCH_LIBRARY_IMPL(GHOSTSR_IMPL_LIBRARY, GHOSTSR_IMPL_KEY, m) {
  m.impl("ghost_shift", &ghost_shift_cuda);
  m.impl("ghost_shift_into", &ghost_shift_into_cuda);
  m.impl("ghost_shift_backward", &ghost_shift_backward_cuda);
  m.impl("ghost_shift_weight_grad", &ghost_shift_weight_grad_cuda);
}

}  // namespace ghostsr
