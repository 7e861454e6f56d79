// Argument checks of the ghost shift, shared by every backend (and by the
// grid emulation of the CUDA kernels). Errors follow one contract with the
// Python reference: a wrong dtype raises TypeError, every other bad argument
// ValueError, with the same message.
#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "ghost_shift.h"

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

// The smallest and largest value of a non-empty integer tensor on the CPU:
// a plain loop, cheaper than two reductions for one entry per channel.
std::pair<int64_t, int64_t> read_range(const at::Tensor& t) {
  const auto s = t.to(at::kLong).contiguous();
  const int64_t* p = s.data_ptr<int64_t>();
  const auto range = std::minmax_element(p, p + s.numel());
  return {*range.first, *range.second};
}

void check_src_values(int64_t lo, int64_t hi, int64_t in_channels) {
  TORCH_CHECK_VALUE(lo >= 0 && hi < in_channels,
                    "ghost_shift: `src` values must lie in [0, ", in_channels,
                    ") (the input channels), got values in [", lo, ", ", hi,
                    "]");
}

void check_src(const at::Tensor& input, const at::Tensor& src,
               int64_t in_channels) {
  check_index_tensor(src, "src", input);
  TORCH_CHECK_VALUE(src.dim() == 1, "ghost_shift: `src` must be 1-D (C_out,), got ",
              "shape ", src.sizes());
  // On the CPU the values are read at every call (a loop over one entry per
  // output channel; the CPU kernels have no asserts of their own). On a GPU
  // that would be a host sync at every layer: the CUDA kernels assert them
  // instead, and a layer's maps are validated where they are set or loaded.
  if (src.device().is_cpu() && src.numel() > 0) {
    const auto range = read_range(src);
    check_src_values(range.first, range.second, in_channels);
  }
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

void check_channel_values(int64_t lo, int64_t hi, int64_t out_channels) {
  TORCH_CHECK_VALUE(lo >= 0 && hi < out_channels,
                    "ghost_shift_weight_grad: `channels` values must lie in "
                    "[0, ", out_channels, ") (the output channels), got "
                    "values in [", lo, ", ", hi, "]");
}

}  // namespace

int64_t check_forward_args(const at::Tensor& input, const at::Tensor& src,
                           const at::Tensor& offsets,
                           const std::optional<at::Tensor>& residual,
                           double scale) {
  check_feature_tensor(input, "input");
  // 0 * inf is NaN: a non-finite scale would turn the zeros outside the
  // image into NaN on one path and not another.
  TORCH_CHECK_VALUE(std::isfinite(scale),
                    "ghost_shift: `scale` must be finite, got ", scale);
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

}  // namespace ghostsr
