// Operator schemas of the ghost shift and the argument checks shared by every
// backend. Kernels: cpu/ghost_shift_cpu.cpp, cuda/ghost_shift_cuda.cu.
#include "ghost_shift.h"

#include <ATen/MemoryOverlap.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include <algorithm>
#include <mutex>
#include <unordered_map>
#include <utility>

namespace ghostsr {

namespace {

void check_index_tensor(const at::Tensor& t, const char* name,
                        const at::Tensor& input) {
  TORCH_CHECK_TYPE(!at::isFloatingType(t.scalar_type()) &&
                  !at::isComplexType(t.scalar_type()) &&
                  t.scalar_type() != at::kBool,
              "ghost_shift: `", name, "` must be an integer tensor, got ",
              t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == input.device(), "ghost_shift: `", name,
              "` must be on the same device as `input` (", input.device(),
              "), got ", t.device());
}

void check_feature_tensor(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.dim() == 4, "ghost_shift: `", name,
              "` must be a 4-D tensor (N, C, H, W), got ", t.dim(),
              "-D with shape ", t.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), "ghost_shift: `", name,
              "` must be a floating point tensor, got ", t.scalar_type());
}

std::pair<int64_t, int64_t> read_range(const at::Tensor& t) {
  if (t.device().is_cpu()) {
    // A plain loop: cheaper than two reductions for one entry per channel.
    const auto s = t.to(at::kLong).contiguous();
    const int64_t* p = s.data_ptr<int64_t>();
    const auto range = std::minmax_element(p, p + s.numel());
    return {*range.first, *range.second};
  }
  const auto range = at::aminmax(t.to(at::kLong));
  const auto host =
      at::stack({std::get<0>(range), std::get<1>(range)}).cpu();
  return {host[0].item<int64_t>(), host[1].item<int64_t>()};
}

void check_src(const at::Tensor& input, const at::Tensor& src,
               int64_t in_channels) {
  check_index_tensor(src, "src", input);
  TORCH_CHECK_VALUE(src.dim() == 1, "ghost_shift: `src` must be 1-D (C_out,), got ",
              "shape ", src.sizes());
  // On the CPU the values are read at every call (a loop over one entry per
  // output channel; the CPU kernels have no asserts of their own). The CUDA
  // entry points check them on the host through index_range
  // (check_src_on_host in cuda/ghost_shift_cuda.cu).
  if (src.device().is_cpu() && src.numel() > 0) {
    const auto range = read_range(src);
    check_src_values(range.first, range.second, in_channels);
  }
}

// What index_range remembers of a tensor whose values it has read. The weak
// reference keeps the TensorImpl's memory from being reused by another
// tensor while the entry exists, so a live owner at the same address is the
// same tensor; any in-place write to it (copy_, indexing, load_state_dict)
// bumps its version.
struct RangeEntry {
  c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl> owner;
  uint32_t version;
  const void* data;
  int64_t numel;
  at::ScalarType dtype;
  std::pair<int64_t, int64_t> range;
};

// Bounded: a model has one src (and one channel list) per ghost layer.
constexpr size_t kMaxRangeEntries = 4096;

std::mutex range_mutex;
std::unordered_map<const c10::TensorImpl*, RangeEntry>& range_cache() {
  static auto* cache =
      new std::unordered_map<const c10::TensorImpl*, RangeEntry>();
  return *cache;
}

void check_src_offsets(const at::Tensor& input, const at::Tensor& src,
                       const at::Tensor& offsets, int64_t in_channels) {
  check_src(input, src, in_channels);
  check_index_tensor(offsets, "offsets", input);
  TORCH_CHECK_VALUE(offsets.dim() == 2 && offsets.size(1) == 2 &&
                  offsets.size(0) == src.size(0),
              "ghost_shift: `offsets` must have shape (C_out, 2) = (",
              src.size(0), ", 2), got ", offsets.sizes());
}

}  // namespace

std::optional<std::pair<int64_t, int64_t>> index_range(const at::Tensor& t,
                                                       bool may_read_back) {
  if (t.numel() == 0) return std::nullopt;
  // Inference tensors have no version counter: read them every time.
  const bool cacheable = !t.is_inference();
  const c10::TensorImpl* key = t.unsafeGetTensorImpl();
  const uint32_t version =
      cacheable ? key->version_counter().current_version() : 0;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(range_mutex);
    auto& cache = range_cache();
    const auto hit = cache.find(key);
    if (hit != cache.end()) {
      const RangeEntry& e = hit->second;
      if (!e.owner.expired() && e.version == version &&
          e.data == t.const_data_ptr() && e.numel == t.numel() &&
          e.dtype == t.scalar_type())
        return e.range;
      cache.erase(hit);
    }
  }
  if (!may_read_back) return std::nullopt;
  const auto range = read_range(t);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(range_mutex);
    auto& cache = range_cache();
    if (cache.size() >= kMaxRangeEntries) {
      for (auto it = cache.begin(); it != cache.end();)
        it = it->second.owner.expired() ? cache.erase(it) : std::next(it);
      if (cache.size() >= kMaxRangeEntries) cache.clear();
    }
    cache.insert_or_assign(
        key,
        RangeEntry{c10::weak_intrusive_ptr<c10::TensorImpl,
                                           c10::UndefinedTensorImpl>(
                       t.getIntrusivePtr()),
                   version, t.const_data_ptr(), t.numel(), t.scalar_type(),
                   range});
  }
  return range;
}

void check_src_values(int64_t lo, int64_t hi, int64_t in_channels) {
  TORCH_CHECK_VALUE(lo >= 0 && hi < in_channels,
                    "ghost_shift: `src` values must lie in [0, ", in_channels,
                    ") (the input channels), got values in [", lo, ", ", hi,
                    "]");
}

void check_channel_values(int64_t lo, int64_t hi, int64_t out_channels) {
  TORCH_CHECK_VALUE(lo >= 0 && hi < out_channels,
                    "ghost_shift_weight_grad: `channels` values must lie in "
                    "[0, ", out_channels, ") (the output channels), got "
                    "values in [", lo, ", ", hi, "]");
}

int64_t check_forward_args(const at::Tensor& input, const at::Tensor& src,
                           const at::Tensor& offsets,
                           const std::optional<at::Tensor>& residual) {
  check_feature_tensor(input, "input");
  check_src_offsets(input, src, offsets, input.size(1));
  const int64_t Co = src.size(0);
  if (residual.has_value()) {
    const auto& r = *residual;
    check_feature_tensor(r, "residual");
    TORCH_CHECK_VALUE(r.scalar_type() == input.scalar_type(),
                "ghost_shift: `residual` must have the dtype of `input` (",
                input.scalar_type(), "), got ", r.scalar_type());
    TORCH_CHECK_VALUE(r.device() == input.device(),
                "ghost_shift: `residual` must be on the same device as "
                "`input` (", input.device(), "), got ", r.device());
    TORCH_CHECK_VALUE(r.size(0) == input.size(0) && r.size(1) == Co &&
                    r.size(2) == input.size(2) && r.size(3) == input.size(3),
                "ghost_shift: `residual` must have the output's shape (",
                input.size(0), ", ", Co, ", ", input.size(2), ", ",
                input.size(3), "), got ", r.sizes());
  }
  return Co;
}

void check_out_arg(const at::Tensor& out, const at::Tensor& input,
                   int64_t out_channels) {
  check_feature_tensor(out, "out");
  TORCH_CHECK_VALUE(out.scalar_type() == input.scalar_type(),
              "ghost_shift: `out` must have the dtype of `input` (",
              input.scalar_type(), "), got ", out.scalar_type());
  TORCH_CHECK_VALUE(out.device() == input.device(),
              "ghost_shift: `out` must be on the same device as `input` (",
              input.device(), "), got ", out.device());
  TORCH_CHECK_VALUE(out.size(0) == input.size(0) && out.size(1) == out_channels &&
                  out.size(2) == input.size(2) && out.size(3) == input.size(3),
              "ghost_shift: `out` must have shape (", input.size(0), ", ",
              out_channels, ", ", input.size(2), ", ", input.size(3),
              "), got ", out.sizes());
  TORCH_CHECK_VALUE(at::has_internal_overlap(out) != at::MemOverlap::Yes,
              "ghost_shift: `out` has elements that share memory (e.g. "
              "an expanded tensor); it needs one place per element");
}

at::Tensor unaliased(const at::Tensor& t, const at::Tensor& out) {
  if (!t.is_alias_of(out) ||
      at::get_overlap_status(out, t) == at::MemOverlapStatus::No)
    return t;
  return t.clone();
}

WriteOrder write_order(const at::Tensor& out, bool prefer_pixels) {
  const int64_t C = out.size(1), H = out.size(2), W = out.size(3);
  const bool planes =
      (W == 1 || out.stride(3) == 1) && (H == 1 || out.stride(2) == W);
  const bool pixels = C == 1 || out.stride(1) == 1;
  if (pixels && (prefer_pixels || !planes)) return WriteOrder::kPixels;
  if (planes) return WriteOrder::kPlanes;
  return WriteOrder::kNeither;
}

void check_backward_args(const at::Tensor& grad_output, const at::Tensor& src,
                         const at::Tensor& offsets, int64_t in_channels) {
  check_feature_tensor(grad_output, "grad_output");
  TORCH_CHECK_VALUE(in_channels > 0,
              "ghost_shift_backward: `in_channels` must be positive, got ",
              in_channels);
  check_src_offsets(grad_output, src, offsets, in_channels);
  TORCH_CHECK_VALUE(grad_output.size(1) == src.size(0),
              "ghost_shift_backward: `grad_output` must have C_out = ",
              src.size(0), " channels (len(src)), got ", grad_output.size(1));
}

void check_weight_grad_args(const at::Tensor& grad_output,
                            const at::Tensor& input, const at::Tensor& src,
                            const at::Tensor& channels, int64_t max_offset) {
  check_feature_tensor(grad_output, "grad_output");
  check_feature_tensor(input, "input");
  TORCH_CHECK_VALUE(max_offset >= 0,
              "ghost_shift_weight_grad: `max_offset` must be >= 0, got ",
              max_offset);
  TORCH_CHECK_VALUE(grad_output.scalar_type() == input.scalar_type(),
              "ghost_shift_weight_grad: `grad_output` and `input` must have "
              "the same dtype, got ",
              grad_output.scalar_type(), " and ", input.scalar_type());
  TORCH_CHECK_VALUE(grad_output.device() == input.device(),
              "ghost_shift_weight_grad: `grad_output` must be on the device "
              "of `input` (",
              input.device(), "), got ", grad_output.device());
  TORCH_CHECK_VALUE(grad_output.size(0) == input.size(0) &&
                  grad_output.size(2) == input.size(2) &&
                  grad_output.size(3) == input.size(3),
              "ghost_shift_weight_grad: `grad_output` must match `input` in "
              "N, H, W; got ",
              grad_output.sizes(), " and ", input.sizes());
  check_src(input, src, input.size(1));
  TORCH_CHECK_VALUE(grad_output.size(1) == src.size(0),
              "ghost_shift_weight_grad: `grad_output` must have C_out = ",
              src.size(0), " channels (len(src)), got ", grad_output.size(1));
  check_index_tensor(channels, "channels", input);
  TORCH_CHECK_VALUE(channels.dim() == 1,
              "ghost_shift_weight_grad: `channels` must be 1-D, got shape ",
              channels.sizes());
  if (channels.device().is_cpu() && channels.numel() > 0) {
    const auto range = read_range(channels);
    check_channel_values(range.first, range.second, src.size(0));
  }
}

bool use_channels_last(const at::Tensor& t) {
  return !t.is_contiguous() &&
         t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

InverseMap inverse_map(const at::Tensor& src, int64_t in_channels) {
  auto src64 = src.to(at::kLong);
  auto sorted = at::sort(src64, std::optional<bool>(true), /*dim=*/0,
                         /*descending=*/false);
  // rowptr[ci] = the number of sources below ci: a search in the sorted
  // sources, on src's device with no read back to the host (bincount's
  // output size would need one on a GPU, breaking CUDA-graph capture).
  auto rowptr = at::searchsorted(std::get<0>(sorted),
                                 at::arange(in_channels + 1, src64.options()));
  return {std::get<1>(sorted).contiguous(), rowptr.contiguous()};
}

namespace {

// ghost_shift_into under autograd. Writing into `out` in place records no
// gradient, so a call that autograd would have to record is refused (the
// Python wrapper ghost_shift(out=) copies a recorded result instead); other
// calls run the backend kernel and bump `out`'s version, so autograd notices
// if `out` was saved for a backward pass.
void ghost_shift_into_autograd(const at::Tensor& input, const at::Tensor& src,
                               const at::Tensor& offsets,
                               const std::optional<at::Tensor>& residual,
                               double scale, bool relu, at::Tensor out) {
  const bool records =
      at::GradMode::is_enabled() &&
      (input.requires_grad() || out.requires_grad() ||
       (residual.has_value() && residual->defined() &&
        residual->requires_grad()));
  TORCH_CHECK_VALUE(!records,
                    "ghost_shift_into: writing into `out` records no "
                    "gradient, but `input`, `residual` or `out` requires one; "
                    "use ghost_shift (or ghostsr_mm.ops.ghost_shift(..., "
                    "out=...), which copies a recorded result into `out`)");
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("ghostsr::ghost_shift_into", "")
          .typed<void(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                      const std::optional<at::Tensor>&, double, bool,
                      at::Tensor)>();
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.call(input, src, offsets, residual, scale, relu, out);
  }
  torch::autograd::impl::bump_version(out);
}

}  // namespace

// index_range as an op, for tests of what it remembers: [] for an empty
// tensor, else [lo, hi].
std::vector<int64_t> index_range_op(const at::Tensor& t) {
  const auto range = index_range(t, /*may_read_back=*/true);
  if (!range) return {};
  return {range->first, range->second};
}

}  // namespace ghostsr

TORCH_LIBRARY_IMPL(ghostsr, CompositeExplicitAutograd, m) {
  m.impl("_index_range", &ghostsr::index_range_op);
}

TORCH_LIBRARY_IMPL(ghostsr, Autograd, m) {
  m.impl("ghost_shift_into", &ghostsr::ghost_shift_into_autograd);
}

TORCH_LIBRARY(ghostsr, m) {
  // Every kernel takes any strides (NCHW and channels_last run as they are,
  // others are copied to one of them) and its output's layout follows the
  // input's, as the fake kernels in ops/registration.py say: torch.compile
  // may then keep the channels_last layout it picks for the convolutions
  // around the shift, instead of converting to NCHW and back at every call.
  const std::vector<at::Tag> kTags = {at::Tag::flexible_layout,
                                      at::Tag::pt2_compliant_tag};
  // moved[n, c, y, x] = input[n, src[c], y - offsets[c, 0], x - offsets[c, 1]],
  // zero outside the image; out = act(scale * moved + residual) with act the
  // identity or ReLU (the epilogue a conv's "sum" and "relu" post-ops would
  // apply, fused into the same pass).
  m.def(
      "ghost_shift(Tensor input, Tensor src, Tensor offsets, "
      "Tensor? residual=None, float scale=1., bool relu=False) -> Tensor",
      kTags);
  // ghost_shift written into `out` (N, C_out, H, W), which may be a view, e.g.
  // a channel slice of a concatenation buffer: no concat copy afterwards.
  m.def(
      "ghost_shift_into(Tensor input, Tensor src, Tensor offsets, "
      "Tensor? residual, float scale, bool relu, Tensor(a!) out) -> ()",
      kTags);
  // Gradient of ghost_shift to `input`: the inverse shift, accumulated over
  // the output channels that share a source.
  m.def(
      "ghost_shift_backward(Tensor grad_output, Tensor src, Tensor offsets, "
      "int in_channels) -> Tensor",
      kTags);
  // For each output channel in `channels` and each candidate (i, j) of the
  // (2d+1)^2 window: sum over n, y, x of
  // grad_output[n, c, y, x] * input[n, src[c], y + i - d, x + j - d].
  m.def(
      "ghost_shift_weight_grad(Tensor grad_output, Tensor input, Tensor src, "
      "Tensor channels, int max_offset) -> Tensor",
      kTags);
  // The smallest and largest value of an integer tensor, as the CUDA
  // kernels' argument checks remember it (index_range); for tests.
  m.def("_index_range(Tensor t) -> int[]");
}

// Importing the extension from Python registers the operators above; this
// module has no Python functions of its own.
#include <Python.h>
static struct PyModuleDef ghostsr_ext_module = {PyModuleDef_HEAD_INIT, "_ext",
                                                nullptr, -1, nullptr};
PyMODINIT_FUNC PyInit__ext(void) { return PyModule_Create(&ghostsr_ext_module); }
