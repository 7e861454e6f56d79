// Declarations shared by the binding, the CPU and the CUDA implementations.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <vector>

namespace ghostsr {

// Errors follow one contract with the Python reference: a wrong dtype raises
// TypeError (TORCH_CHECK_TYPE), every other bad argument ValueError
// (TORCH_CHECK_VALUE), with the same message.

// Validates the arguments of ghost_shift and returns the number of output
// channels. Every message names the argument and what was expected. The
// values of a CPU `src` are checked here; a GPU's are asserted by the kernels
// (reading them back would sync with the host at every layer).
int64_t check_forward_args(const at::Tensor& input, const at::Tensor& src,
                           const at::Tensor& offsets,
                           const std::optional<at::Tensor>& residual,
                           double scale);

// Validates `out` of ghost_shift_into: shape (N, C_out, H, W), the dtype and
// device of `input`, no element written twice.
void check_out_arg(const at::Tensor& out, const at::Tensor& input,
                   int64_t out_channels);

// `t`, or a copy of it where it shares memory with `out`, so that writing
// `out` cannot change what is read (the kernels may write a position twice).
at::Tensor unaliased(const at::Tensor& t, const at::Tensor& out);

// How the forward kernels can write `out` (N, C, H, W): plane by plane (every
// (n, c) plane contiguous: NCHW, or a channel slice of a larger NCHW tensor),
// pixel by pixel (the C values of every pixel contiguous: NHWC, or a channel
// slice of a larger NHWC tensor), or neither.
enum class WriteOrder { kPlanes, kPixels, kNeither };
// `prefer_pixels` decides when both orders fit (e.g. C == 1).
WriteOrder write_order(const at::Tensor& out, bool prefer_pixels);

// The memory format the kernels read inputs in for a write order (pixels:
// channels-last).
inline at::MemoryFormat format_of(bool pixels) {
  return pixels ? at::MemoryFormat::ChannelsLast
                : at::MemoryFormat::Contiguous;
}

// Validates the arguments of ghost_shift_backward.
void check_backward_args(const at::Tensor& grad_output, const at::Tensor& src,
                         const at::Tensor& offsets, int64_t in_channels);

// Validates the arguments of ghost_shift_weight_grad.
void check_weight_grad_args(const at::Tensor& grad_output,
                            const at::Tensor& input, const at::Tensor& src,
                            const at::Tensor& channels, int64_t max_offset);

// True when the kernels should walk `t` in channels-last (NHWC) order: it is
// channels-last contiguous and not also plain contiguous.
bool use_channels_last(const at::Tensor& t);

// For every intrinsic channel, the output channels that read it, as a CSR
// map: the output channels are perm[rowptr[ci] : rowptr[ci + 1]]. Built with
// ATen ops on src's device.
struct InverseMap {
  at::Tensor perm;    // int64 [Co]
  at::Tensor rowptr;  // int64 [Ci + 1]
};
InverseMap inverse_map(const at::Tensor& src, int64_t in_channels);

// The operator schemas, for the extension's library (and the grid
// emulation's, which registers the CUDA kernels under another name).
inline void define_ops(torch::Library& m) {
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
}

}  // namespace ghostsr
