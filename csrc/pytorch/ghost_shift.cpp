// The ghost shift's operators: schemas (ghost_shift.h, define_ops) and the
// autograd rule of the in-place form. Argument checks: ghost_shift_args.cpp;
// kernels: cpu/ghost_shift_cpu.cpp, cuda/ghost_shift_cuda.cu.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include "ghost_shift.h"

namespace ghostsr {

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

}  // namespace ghostsr

TORCH_LIBRARY_IMPL(ghostsr, Autograd, m) {
  m.impl("ghost_shift_into", &ghostsr::ghost_shift_into_autograd);
}

TORCH_LIBRARY(ghostsr, m) { ghostsr::define_ops(m); }

// Importing the extension from Python registers the operators above; this
// module has no Python functions of its own.
#include <Python.h>
static struct PyModuleDef ghostsr_ext_module = {PyModuleDef_HEAD_INIT, "_ext",
                                                nullptr, -1, nullptr};
PyMODINIT_FUNC PyInit__ext(void) { return PyModule_Create(&ghostsr_ext_module); }
