// CPU kernels of the ghost shift. Each plane's valid block is moved as one
// range (a vectorisable copy loop, or one loop applying the fused epilogue),
// with no per-element branch; (n, c) planes run in parallel with
// at::parallel_for, grouped by source plane so that each is read once.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <optional>
#include <type_traits>
#include <vector>

#include "../ghost_shift.h"
#include "ghost_shift_common.h"

namespace ghostsr {
namespace {

// Grain of parallel_for in planes: about 32K elements per task.
int64_t plane_grain(int64_t plane) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(plane, 1));
}

std::vector<int64_t> to_host_vector(const at::Tensor& t) {
  auto c = t.to(at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(),
                              c.data_ptr<int64_t>() + c.numel());
}

// Output channels [first, first + length) read source channels
// [src, src + length), all moved by (dy, dx).
struct ChannelRun {
  int64_t first, length, src, dy, dx;
};

std::vector<ChannelRun> channel_runs(const std::vector<int64_t>& s,
                                     const std::vector<int64_t>& off) {
  std::vector<ChannelRun> runs;
  for (int64_t c = 0; c < static_cast<int64_t>(s.size()); ++c) {
    if (!runs.empty()) {
      auto& r = runs.back();
      if (s[c] == r.src + r.length && off[2 * c] == r.dy &&
          off[2 * c + 1] == r.dx) {
        ++r.length;
        continue;
      }
    }
    runs.push_back({c, 1, s[c], off[2 * c], off[2 * c + 1]});
  }
  return runs;
}

// How moved values reach the output. PlainCopy: a copy loop, and memset
// outside the image. Fused: the epilogue act(scale * moved + residual) of
// ghost_shift_common.h, as one vectorisable loop per row segment. `r` points
// at the residual values of the same output positions (unused without one).
template <typename T>
struct PlainCopy {
  void moved(T* d, const T* s, const T*, int64_t len) const {
    // A plain loop: on this project's CI machine glibc's memcpy of 64 KB
    // planes was 1.8x slower than a vectorised copy (bench_shift.py).
    for (int64_t i = 0; i < len; ++i) d[i] = s[i];
  }
  void outside(T* d, const T*, int64_t len) const {
    if (len > 16) {
      std::memset(d, 0, sizeof(T) * len);
    } else {
      for (int64_t i = 0; i < len; ++i) d[i] = T(0);
    }
  }
};

template <typename T, bool kResidual, bool kRelu>
struct Fused {
  using A = at::opmath_type<T>;
  A scale;
  void moved(T* d, const T* s, const T* r, int64_t len) const {
    for (int64_t i = 0; i < len; ++i)
      d[i] = static_cast<T>(epilogue<A>(static_cast<A>(s[i]),
                                        kResidual ? static_cast<A>(r[i]) : A(0),
                                        scale, kRelu));
  }
  void outside(T* d, const T* r, int64_t len) const {
    if constexpr (!kResidual) {
      std::memset(d, 0, sizeof(T) * len);  // act(0) = 0
    } else {
      for (int64_t i = 0; i < len; ++i)
        d[i] = static_cast<T>(
            epilogue<A>(A(0), static_cast<A>(r[i]), scale, kRelu));
    }
  }
};

// Calls f with the writer of the requested epilogue (a compile-time type, so
// each variant gets its own branch-free inner loops).
template <typename T, typename F>
void with_writer(bool residual, bool relu, double scale, F&& f) {
  using A = at::opmath_type<T>;
  const A s = static_cast<A>(scale);
  if (!residual && !relu && scale == 1.0) return f(PlainCopy<T>{});
  if (residual && relu) return f(Fused<T, true, true>{s});
  if (residual) return f(Fused<T, true, false>{s});
  if (relu) return f(Fused<T, false, true>{s});
  f(Fused<T, false, false>{s});
}

template <typename T>
const T* advance(const T* p, int64_t k) {
  return p ? p + k : p;
}

// dst (H x W) = src (H x W) moved by (dy, dx), zero outside, written through
// `op`; res is the residual plane of dst (or null).
template <typename T, typename Op>
void shift_plane(const T* src, T* dst, const T* res, int64_t H, int64_t W,
                 int64_t dy, int64_t dx, const Op& op) {
  const ShiftRange ry = shifted_range(H, dy);
  const ShiftRange rx = shifted_range(W, dx);
  if (ry.empty() || rx.empty()) {
    op.outside(dst, res, H * W);
    return;
  }
  // The valid block as ONE flat range, from its first position to its last:
  // dst[k] = src[k - dy * W - dx] there (every source index lies inside the
  // plane). Where dx != 0 that range also covers |dx| positions per row
  // boundary whose source is the neighbouring row; they are written again
  // as outside. Few long moves instead of one short move per row.
  const int64_t first = ry.lo * W + rx.lo, last = (ry.hi - 1) * W + rx.hi;
  op.outside(dst, res, first);
  op.moved(dst + first, src + first - dy * W - dx, advance(res, first),
           last - first);
  op.outside(dst + last, advance(res, last), H * W - last);
  if (dx == 0) return;
  for (int64_t y = ry.lo; y + 1 < ry.hi; ++y) {
    const int64_t gap = y * W + rx.hi;  // row y's end and row y + 1's start
    op.outside(dst + gap, advance(res, gap), W - rx.length());
  }
}

// acc (H x W) += src moved by (dy, dx).
template <typename T, typename A>
void add_shifted_plane(const T* src, A* acc, int64_t H, int64_t W, int64_t dy,
                       int64_t dx) {
  const ShiftRange ry = shifted_range(H, dy);
  const ShiftRange rx = shifted_range(W, dx);
  for (int64_t y = ry.lo; y < ry.hi; ++y) {
    A* d = acc + y * W;
    const T* s = src + (y - dy) * W - dx;
    for (int64_t x = rx.lo; x < rx.hi; ++x) d[x] += static_cast<A>(s[x]);
  }
}

// Dot product of two rows in 8 independent lanes, so the compiler can
// vectorise the reduction without reassociating it.
template <typename T, typename A>
A row_dot(const T* a, const T* b, int64_t n) {
  A lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t x = 0;
  for (; x + 8 <= n; x += 8)
    for (int k = 0; k < 8; ++k)
      lanes[k] += static_cast<A>(a[x + k]) * static_cast<A>(b[x + k]);
  A total = 0;
  for (; x < n; ++x) total += static_cast<A>(a[x]) * static_cast<A>(b[x]);
  for (int k = 0; k < 8; ++k) total += lanes[k];
  return total;
}

// The K * K window products of the weight gradient (see
// ghost_shift_weight_grad_cpu): acc[i * K + j] += sum_{x < n} g[x] *
// w[x + i * P + j]. Unlike the other kernels' copies, these are
// compute-bound (2 d + 1 squared products per element).
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define GHOSTSR_X86_VECTORS 1
typedef float float8 __attribute__((vector_size(32)));
typedef float float8_unaligned __attribute__((vector_size(32), aligned(4)));

inline float8 load8(const float* p) {
  return *reinterpret_cast<const float8_unaligned*>(p);
}

// For K known at compile time, with 8-float vectors: the K products of a
// window row share each load of g, and their 2 K partial sums (two blocks
// of 8) are independent, so the FMAs do not wait on each other.
template <int K>
inline __attribute__((always_inline)) void window_dots_body(
    const float* g, const float* w, int64_t n, int64_t P, float* acc) {
  for (int i = 0; i < K; ++i) {
    const float* row = w + i * P;
    float8 sums[2][K] = {};
    int64_t x = 0;
    for (; x + 16 <= n; x += 16) {
      const float8 g0 = load8(g + x), g1 = load8(g + x + 8);
      for (int j = 0; j < K; ++j) {
        sums[0][j] += g0 * load8(row + x + j);
        sums[1][j] += g1 * load8(row + x + 8 + j);
      }
    }
    for (int j = 0; j < K; ++j) {
      float total = 0;
      for (int64_t t = x; t < n; ++t) total += g[t] * row[t + j];
      for (int l = 0; l < 8; ++l) total += sums[0][j][l] + sums[1][j][l];
      acc[i * K + j] += total;
    }
  }
}

// The same code built for AVX2 + FMA (4x the baseline's speed here) and
// for the baseline; the CPU that runs it picks (window_dots).
template <int K>
__attribute__((target("avx2,fma"))) void window_dots_avx2(
    const float* g, const float* w, int64_t n, int64_t P, float* acc) {
  window_dots_body<K>(g, w, n, P, acc);
}

template <int K>
void window_dots_base(const float* g, const float* w, int64_t n, int64_t P,
                      float* acc) {
  window_dots_body<K>(g, w, n, P, acc);
}

template <int K>
void window_dots_fixed(const float* g, const float* w, int64_t n, int64_t P,
                       float* acc) {
  static const bool avx2 =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  (avx2 ? window_dots_avx2<K> : window_dots_base<K>)(g, w, n, P, acc);
}
#endif

// float with d = 1 or 2 (3x3, 5x5 windows) by the vectorised code above,
// any other case by row_dot.
template <typename A>
void window_dots(const A* g, const A* w, int64_t n, int64_t K, int64_t P,
                 A* acc) {
#ifdef GHOSTSR_X86_VECTORS
  if constexpr (std::is_same_v<A, float>) {
    if (K == 3) return window_dots_fixed<3>(g, w, n, P, acc);
    if (K == 5) return window_dots_fixed<5>(g, w, n, P, acc);
  }
#endif
  for (int64_t i = 0; i < K; ++i)
    for (int64_t j = 0; j < K; ++j)
      acc[i * K + j] += row_dot<A, A>(g, w + i * P + j, n);
}

// The output channels ordered by their source channel (stable): planes that
// read the same source are written one after the other, by the same task,
// while that source is still in cache.
std::vector<int64_t> by_source(const std::vector<int64_t>& s) {
  std::vector<int64_t> order(s.size());
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return s[a] < s[b]; });
  return order;
}

// Writes the forward into `out`, plane by plane (NCHW: any n and c strides,
// contiguous planes) or pixel by pixel (NHWC: any n, y and x strides,
// contiguous channels); `in` and `res` are contiguous in the matching format.
void forward_into(const at::Tensor& in, const std::vector<int64_t>& s,
                  const std::vector<int64_t>& off, const at::Tensor& res,
                  double scale, bool relu, bool pixels, at::Tensor& out) {
  const int64_t N = out.size(0), Co = out.size(1);
  const int64_t H = out.size(2), W = out.size(3), Ci = in.size(1);
  if (out.numel() == 0) return;
  const int64_t sn = out.stride(0), sc = out.stride(1);
  const int64_t sy = out.stride(2), sx = out.stride(3);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, in.scalar_type(), "ghost_shift_cpu", [&] {
        const scalar_t* ip = in.data_ptr<scalar_t>();
        const scalar_t* rp = res.defined() ? res.data_ptr<scalar_t>() : nullptr;
        scalar_t* op = out.data_ptr<scalar_t>();
        with_writer<scalar_t>(rp != nullptr, relu, scale, [&](auto writer) {
          if (!pixels) {
            const auto order = by_source(s);
            at::parallel_for(0, N * Co, plane_grain(H * W),
                             [&](int64_t begin, int64_t end) {
              for (int64_t nc = begin; nc < end; ++nc) {
                const int64_t n = nc / Co, c = order[nc % Co];
                shift_plane(ip + (n * Ci + s[c]) * H * W, op + n * sn + c * sc,
                            advance(rp, (n * Co + c) * H * W), H, W, off[2 * c],
                            off[2 * c + 1], writer);
              }
            });
            return;
          }
          // Channels-last: one task per output row; per pixel, each run of
          // output channels with consecutive sources and one offset (the
          // intrinsic block and the ghost block of a by-order layer) is one
          // row segment.
          const auto runs = channel_runs(s, off);
          at::parallel_for(0, N * H, plane_grain(W * Co),
                           [&](int64_t begin, int64_t end) {
            for (int64_t ny = begin; ny < end; ++ny) {
              const int64_t n = ny / H, y = ny % H;
              for (int64_t x = 0; x < W; ++x) {
                scalar_t* o = op + n * sn + y * sy + x * sx;
                const scalar_t* r = advance(rp, (ny * W + x) * Co);
                for (const auto& run : runs) {
                  const int64_t ys = y - run.dy, xs = x - run.dx;
                  if (ys >= 0 && ys < H && xs >= 0 && xs < W)
                    writer.moved(o + run.first,
                                 ip + ((n * H + ys) * W + xs) * Ci + run.src,
                                 advance(r, run.first), run.length);
                  else
                    writer.outside(o + run.first, advance(r, run.first),
                                   run.length);
                }
              }
            }
          });
        });
      });
}

at::Tensor ghost_shift_cpu(const at::Tensor& input, const at::Tensor& src,
                           const at::Tensor& offsets,
                           const std::optional<at::Tensor>& residual,
                           double scale, bool relu) {
  const int64_t Co = check_forward_args(input, src, offsets, residual, scale);
  const bool pixels = use_channels_last(input);
  const auto fmt = format_of(pixels);
  auto out = at::empty({input.size(0), Co, input.size(2), input.size(3)},
                       input.options().memory_format(fmt));
  forward_into(input.contiguous(fmt), to_host_vector(src),
               to_host_vector(offsets),  // reads strided/expanded views
               residual.has_value() ? residual->contiguous(fmt) : at::Tensor(),
               scale, relu, pixels, out);
  return out;
}

void ghost_shift_into_cpu(const at::Tensor& input, const at::Tensor& src,
                          const at::Tensor& offsets,
                          const std::optional<at::Tensor>& residual,
                          double scale, bool relu, at::Tensor out) {
  const int64_t Co = check_forward_args(input, src, offsets, residual, scale);
  check_out_arg(out, input, Co);
  const auto order = write_order(out, use_channels_last(input));
  if (order == WriteOrder::kNeither) {  // e.g. a transposed view
    out.copy_(ghost_shift_cpu(input, src, offsets, residual, scale, relu));
    return;
  }
  const bool pixels = order == WriteOrder::kPixels;
  const auto fmt = format_of(pixels);
  forward_into(unaliased(input, out).contiguous(fmt),
               to_host_vector(src), to_host_vector(offsets),
               residual.has_value()
                   ? unaliased(*residual, out).contiguous(fmt)
                   : at::Tensor(),
               scale, relu, pixels, out);
}

at::Tensor ghost_shift_backward_cpu(const at::Tensor& grad_output,
                                    const at::Tensor& src,
                                    const at::Tensor& offsets,
                                    int64_t in_channels) {
  check_backward_args(grad_output, src, offsets, in_channels);
  const int64_t N = grad_output.size(0), Co = grad_output.size(1);
  const int64_t H = grad_output.size(2), W = grad_output.size(3);
  const int64_t Ci = in_channels;
  // The input gradient has the layout of grad_output (as on CUDA).
  const bool pixels = use_channels_last(grad_output);
  const auto go = grad_output.contiguous(format_of(pixels));
  auto grad_input = at::empty({N, Ci, H, W},
                              grad_output.options().memory_format(format_of(pixels)));
  if (grad_input.numel() == 0) return grad_input;
  // Output channels of each intrinsic channel (CSR), so that each task owns
  // its grad_input plane or element: no atomics.
  const auto inv = inverse_map(src, Ci);
  if (pixels) {
    // Channels-last: element by element, through the body the CUDA kernel
    // runs (ghost_shift_common.h).
    const auto off = offsets.to(at::kLong);
    const Offsets offs{off.data_ptr<int64_t>(), off.stride(0), off.stride(1)};
    const Dims<int64_t> d{N, Ci, Co, H, W};
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, go.scalar_type(), "ghost_shift_backward_cpu",
        [&] {
          using acc_t = at::opmath_type<scalar_t>;
          const scalar_t* gp = go.data_ptr<scalar_t>();
          scalar_t* gi = grad_input.data_ptr<scalar_t>();
          const int64_t* perm = inv.perm.data_ptr<int64_t>();
          const int64_t* rowptr = inv.rowptr.data_ptr<int64_t>();
          at::parallel_for(0, grad_input.numel(), 32768,
                           [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i)
              gi[i] = backward_element<true, scalar_t, acc_t, int64_t>(
                  Coords<true, int64_t>(i, Ci, H, W), gp, perm, rowptr, offs, d);
          });
        });
    return grad_input;
  }

  const auto perm = to_host_vector(inv.perm);
  const auto rowptr = to_host_vector(inv.rowptr);
  const auto off = to_host_vector(offsets);

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, go.scalar_type(), "ghost_shift_backward_cpu",
      [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const scalar_t* gp = go.data_ptr<scalar_t>();
        scalar_t* gi = grad_input.data_ptr<scalar_t>();
        at::parallel_for(0, N * Ci, plane_grain(H * W),
                         [&](int64_t begin, int64_t end) {
          std::vector<acc_t> acc;
          for (int64_t nc = begin; nc < end; ++nc) {
            const int64_t n = nc / Ci, ci = nc % Ci;
            const int64_t first = rowptr[ci], last = rowptr[ci + 1];
            scalar_t* dst = gi + nc * H * W;
            if (last - first == 0) {
              std::memset(dst, 0, sizeof(scalar_t) * H * W);
              continue;
            }
            if (std::is_same_v<acc_t, scalar_t> || last - first == 1) {
              // The first reader's inverse shift writes the whole plane
              // (zeros outside); the others add onto it in place (float and
              // double accumulate in their own type).
              const int64_t c = perm[first];
              shift_plane(gp + (n * Co + c) * H * W, dst,
                          static_cast<const scalar_t*>(nullptr), H, W,
                          -off[2 * c], -off[2 * c + 1], PlainCopy<scalar_t>{});
              for (int64_t k = first + 1; k < last; ++k) {
                const int64_t ck = perm[k];
                add_shifted_plane(gp + (n * Co + ck) * H * W, dst, H, W,
                                  -off[2 * ck], -off[2 * ck + 1]);
              }
              continue;
            }
            // Half and bfloat16: accumulate in float, round once.
            acc.assign(H * W, acc_t(0));
            for (int64_t k = first; k < last; ++k) {
              const int64_t c = perm[k];
              add_shifted_plane(gp + (n * Co + c) * H * W, acc.data(), H, W,
                                -off[2 * c], -off[2 * c + 1]);
            }
            for (int64_t i = 0; i < H * W; ++i)
              dst[i] = static_cast<scalar_t>(acc[i]);
          }
        });
      });
  return grad_input;
}

at::Tensor ghost_shift_weight_grad_cpu(const at::Tensor& grad_output,
                                       const at::Tensor& input,
                                       const at::Tensor& src,
                                       const at::Tensor& channels,
                                       int64_t max_offset) {
  check_weight_grad_args(grad_output, input, src, channels, max_offset);
  const int64_t N = input.size(0), Ci = input.size(1);
  const int64_t H = input.size(2), W = input.size(3);
  const int64_t Co = grad_output.size(1);
  const int64_t K = 2 * max_offset + 1;
  const auto s = to_host_vector(src);
  const auto chans = to_host_vector(channels);
  const int64_t G = static_cast<int64_t>(chans.size());
  const auto go = grad_output.contiguous();
  const auto in = input.contiguous();
  // Returned in the accumulation type (float for half and bfloat16): a sum
  // over N * H * W products overflows float16's 65504 under a scaled loss.
  auto result = at::empty(
      {G, K, K}, input.options().dtype(at::toOpMathType(input.scalar_type())));

  // Each plane pair is copied once, in acc_t, into zero-padded rows of
  // P = W + 2d: grad_output row y at gpad[y * P + d ...], input row y at
  // ipad[d + (y + d) * P + d ...] (d padding rows above and below, and a
  // margin of d in front). Candidate (i, j) is then ONE flat dot
  // product over the H * P padded grad positions,
  //   sum_k gpad[k] * ipad[k + i * P + j],
  // whose out-of-image terms meet padding zeros: exact, with no per-row
  // setup, reduction or tail.
  const Dims<int64_t> dims{N, Ci, Co, H, W};
  const int64_t P = W + 2 * max_offset;
  const int64_t gsize = H * P;
  const int64_t isize = (H + 2 * max_offset) * P + 2 * max_offset;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, in.scalar_type(), "ghost_shift_weight_grad_cpu",
      [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const scalar_t* gp = go.data_ptr<scalar_t>();
        const scalar_t* ip = in.data_ptr<scalar_t>();
        auto* rp = result.data_ptr<at::opmath_type<scalar_t>>();
        at::parallel_for(0, G, 1, [&](int64_t begin, int64_t end) {
          std::vector<acc_t> acc(K * K);
          std::vector<acc_t> gpad(gsize, acc_t(0)), ipad(isize, acc_t(0));
          for (int64_t g = begin; g < end; ++g) {
            const int64_t c = chans[g];
            std::fill(acc.begin(), acc.end(), acc_t(0));
            for (int64_t n = 0; n < N; ++n) {
              const scalar_t* gplane = gp + (n * Co + c) * H * W;
              const scalar_t* iplane = ip + (n * Ci + s[c]) * H * W;
              for (int64_t y = 0; y < H; ++y) {
                acc_t* gd = gpad.data() + y * P + max_offset;
                acc_t* id =
                    ipad.data() + max_offset + (y + max_offset) * P + max_offset;
                for (int64_t x = 0; x < W; ++x) {
                  gd[x] = static_cast<acc_t>(gplane[y * W + x]);
                  id[x] = static_cast<acc_t>(iplane[y * W + x]);
                }
              }
              window_dots<acc_t>(gpad.data(), ipad.data(), gsize, K, P,
                                 acc.data());
            }
            // The padded sums also multiply padding zeros by values outside
            // the window (0 * inf = NaN). Where a sum is not finite, the
            // channel is summed again over the inside terms only, by the
            // CUDA kernel's body: a non-finite value reaches the candidates
            // that read it and no others, on both devices.
            if (!std::all_of(acc.begin(), acc.end(),
                             [](acc_t v) { return std::isfinite(v); }))
              for (int64_t k = 0; k < K * K; ++k)
                acc[k] = weight_grad_partial<scalar_t, acc_t, int64_t>(
                    0, N * H * W, 1, gp, ip, c, s[c],
                    candidate_shift(k / K, max_offset),
                    candidate_shift(k % K, max_offset), dims);
            for (int64_t k = 0; k < K * K; ++k)
              rp[g * K * K + k] = acc[k];
          }
        });
      });
  return result;
}

}  // namespace

TORCH_LIBRARY_IMPL(ghostsr, CPU, m) {
  m.impl("ghost_shift", &ghost_shift_cpu);
  m.impl("ghost_shift_into", &ghost_shift_into_cpu);
  m.impl("ghost_shift_backward", &ghost_shift_backward_cpu);
  m.impl("ghost_shift_weight_grad", &ghost_shift_weight_grad_cpu);
}

}  // namespace ghostsr
