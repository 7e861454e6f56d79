// The CUDA kernels of csrc/pytorch/cuda/ghost_shift_cuda.cu (the file itself,
// its launchers included), compiled as host code over grid_emulation.h and
// registered as the CPU ops ghostsr_grid::* (the schemas of ghostsr::*), for
// tests/ops/test_grid_emulation.py.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "grid_emulation.h"

#include "../../csrc/pytorch/cuda/ghost_shift_cuda.cu"

namespace ghostsr {
namespace {

std::vector<int64_t> as_list(const LaunchConfig& cfg) {
  return {cfg.grid_x, cfg.grid_y, cfg.block, cfg.chunk};
}

std::vector<int64_t> element_launch_op(int64_t total) {
  return as_list(element_launch(total));
}

std::vector<int64_t> weight_grad_launch_op(int64_t pairs, int64_t positions) {
  return as_list(weight_grad_launch(pairs, positions));
}

// (grid_x, grid_y, block) of each launch since the last call.
std::vector<int64_t> launches_op() {
  auto launches = std::move(grid_emulation::state.launches);
  grid_emulation::state.launches.clear();
  return launches;
}

// Tensors whose element offsets exceed `limit` take the 64-bit kernels;
// returns the previous limit.
int64_t set_index_32_limit(int64_t limit) {
  const int64_t previous = grid_emulation::state.index_32_limit;
  grid_emulation::state.index_32_limit = limit;
  return previous;
}

// The forward launcher without the host's argument checks: what reaches a
// GPU kernel when a map was changed behind the layer's back.
at::Tensor forward_unchecked(const at::Tensor& input, const at::Tensor& src,
                             const at::Tensor& offsets) {
  auto out = at::empty({input.size(0), src.size(0), input.size(2), input.size(3)},
                       input.options());
  launch_forward(input.contiguous(), src, offsets, at::Tensor(), 1.0, false,
                 /*pixels=*/false, out);
  return out;
}

}  // namespace
}  // namespace ghostsr

TORCH_LIBRARY(ghostsr_grid, m) {
  ghostsr::define_ops(m);
  m.def("element_launch(int total) -> int[]", &ghostsr::element_launch_op);
  m.def("weight_grad_launch(int pairs, int positions) -> int[]",
        &ghostsr::weight_grad_launch_op);
  m.def("launches() -> int[]", &ghostsr::launches_op);
  m.def("set_index_32_limit(int limit) -> int", &ghostsr::set_index_32_limit);
  m.def("forward_unchecked(Tensor input, Tensor src, Tensor offsets) -> Tensor");
}

TORCH_LIBRARY_IMPL(ghostsr_grid, CPU, m) {
  m.impl("forward_unchecked", &ghostsr::forward_unchecked);
}
