// Declarations shared by the binding, the CPU and the CUDA implementations.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <utility>
#include <vector>

namespace ghostsr {

// Errors follow one contract with the Python reference: a wrong dtype raises
// TypeError (TORCH_CHECK_TYPE), every other bad argument ValueError
// (TORCH_CHECK_VALUE), with the same message.

// The smallest and largest value of the integer tensor `t` (nullopt when it
// is empty). Read once per tensor and version: a model's `src` and channel
// lists are read back from a GPU on their first call only, not at every
// layer of every forward pass, and a tensor written in place since is read
// again. A write through `.data`, which has a version counter of its own,
// is not seen: the CUDA kernels' asserts stop what it lets through. Without
// a remembered range and with `may_read_back` false (a CUDA graph is being
// captured), nullopt.
std::optional<std::pair<int64_t, int64_t>> index_range(const at::Tensor& t,
                                                       bool may_read_back);

// Raise the error for `src` values in [lo, hi] outside [0, in_channels).
void check_src_values(int64_t lo, int64_t hi, int64_t in_channels);
// Raise the error for `channels` values in [lo, hi] outside [0,
// out_channels).
void check_channel_values(int64_t lo, int64_t hi, int64_t out_channels);

// Validates the arguments of ghost_shift and returns the number of output
// channels. Every message names the argument and what was expected.
int64_t check_forward_args(const at::Tensor& input, const at::Tensor& src,
                           const at::Tensor& offsets,
                           const std::optional<at::Tensor>& residual);

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

}  // namespace ghostsr
