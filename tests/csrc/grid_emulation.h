// CUDA's execution model on the CPU, so that the kernels of
// csrc/pytorch/cuda/ghost_shift_cuda.cu compile as host code and run here
// with the grid and block sizes their launchers compute.
//
// A launch runs its blocks one after another. A block's threads first run
// one after another as plain calls; a kernel that reaches a barrier
// (__syncthreads, a warp shuffle) makes the launch start again with every
// thread of a block as a fiber (ucontext) that runs until its next barrier,
// phase by phase. The kernels write their results (never accumulate into
// them), so starting again is safe. __shared__ variables are static: blocks
// never overlap. A kernel assert throws (a CUDA one would stop the context).
#pragma once

#include <ucontext.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <c10/core/Device.h>

#define GHOSTSR_GRID_EMULATION 1
#define GHOSTSR_IMPL_LIBRARY ghostsr_grid
#define GHOSTSR_IMPL_KEY CPU

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(threads)
#define __shared__ static

#define threadIdx ::grid_emulation::thread_idx
#define blockIdx ::grid_emulation::block_idx
#define blockDim ::grid_emulation::block_dim
#define gridDim ::grid_emulation::grid_dim
#define __syncthreads() ::grid_emulation::sync_threads()
#define __shfl_down_sync(mask, value, delta) \
  ::grid_emulation::shfl_down_sync(mask, value, delta)

#define GHOSTSR_KERNEL_ASSERT(cond)                                        \
  do {                                                                     \
    if (!(cond))                                                           \
      throw std::runtime_error("device-side assert failed: " #cond);      \
  } while (0)
#define GHOSTSR_LAUNCH(kernel, cfg, stream) ::grid_emulation::launch(kernel, cfg)
#define GHOSTSR_LAUNCH_CHECK() ((void)0)
#define GHOSTSR_INDEX_32_LIMIT ::grid_emulation::state.index_32_limit

namespace grid_emulation {

struct Dim3 {
  unsigned int x = 1, y = 1, z = 1;
};
inline Dim3 thread_idx, block_idx, block_dim, grid_dim;

constexpr unsigned int kWarpSize = 32;
constexpr size_t kStackBytes = 256 * 1024;

// Thrown by a barrier reached in a plain run: the launch is run again with
// fibers.
struct NeedsFibers {};

struct Barrier {
  unsigned int arrived = 0;
  unsigned int generation = 0;
};

struct State {
  bool fibers = false;
  ucontext_t scheduler;
  std::vector<ucontext_t> contexts;
  std::vector<std::vector<char>> stacks;
  std::vector<bool> done;
  unsigned int current = 0;
  Barrier block;
  std::vector<Barrier> warps;
  std::vector<std::array<unsigned char, 16>> lanes;  // shuffle values
  uint64_t steps = 0;  // arrivals and exits: a round without any deadlocks
  const std::function<void()>* body = nullptr;
  std::exception_ptr error;
  // (grid_x, grid_y, block) of every launch since the last read.
  std::vector<int64_t> launches;
  // Tensors whose offsets exceed it take the kernels' 64-bit index path.
  int64_t index_32_limit = 0x7fffffff;
};
inline State state;

inline void yield() {
  swapcontext(&state.contexts[state.current], &state.scheduler);
}

inline void arrive(Barrier& b, unsigned int expected) {
  if (!state.fibers) throw NeedsFibers{};
  ++state.steps;
  const unsigned int generation = b.generation;
  if (++b.arrived == expected) {
    b.arrived = 0;
    ++b.generation;
    return;
  }
  while (b.generation == generation) yield();
}

inline unsigned int warp_width(unsigned int warp) {
  const unsigned int rest = block_dim.x - warp * kWarpSize;
  return rest < kWarpSize ? rest : kWarpSize;
}

inline void sync_threads() { arrive(state.block, block_dim.x); }

// The value of lane + delta of the caller's warp (its own where that lane
// does not exist), as __shfl_down_sync with a full mask.
template <typename V>
V shfl_down_sync(unsigned int mask, V value, unsigned int delta) {
  static_assert(sizeof(V) <= 16, "a shuffled value fits 16 bytes");
  if (mask != 0xffffffffu)
    throw std::logic_error("the grid emulation shuffles full warps only");
  if (!state.fibers) throw NeedsFibers{};
  const unsigned int t = thread_idx.x, warp = t / kWarpSize;
  const unsigned int lane = t % kWarpSize, width = warp_width(warp);
  std::memcpy(state.lanes[t].data(), &value, sizeof(V));
  arrive(state.warps[warp], width);
  V result = value;
  if (lane + delta < width)
    std::memcpy(&result, state.lanes[t + delta].data(), sizeof(V));
  arrive(state.warps[warp], width);
  return result;
}

inline void fiber_entry() {
  try {
    (*state.body)();
  } catch (...) {
    if (!state.error) state.error = std::current_exception();
  }
  ++state.steps;
  state.done[state.current] = true;
}  // returns to state.scheduler (uc_link)

inline void run_block_with_fibers(unsigned int threads) {
  state.contexts.resize(threads);
  if (state.stacks.size() < threads) state.stacks.resize(threads);
  state.done.assign(threads, false);
  state.block = Barrier{};
  state.warps.assign((threads + kWarpSize - 1) / kWarpSize, Barrier{});
  state.lanes.resize(threads);
  for (unsigned int t = 0; t < threads; ++t) {
    state.stacks[t].resize(kStackBytes);
    ucontext_t& c = state.contexts[t];
    getcontext(&c);
    c.uc_stack.ss_sp = state.stacks[t].data();
    c.uc_stack.ss_size = kStackBytes;
    c.uc_link = &state.scheduler;
    makecontext(&c, fiber_entry, 0);
  }
  unsigned int alive = threads;
  while (alive > 0) {
    const uint64_t before = state.steps;
    for (unsigned int t = 0; t < threads; ++t) {
      if (state.done[t]) continue;
      state.current = t;
      thread_idx = Dim3{t, 0, 0};
      swapcontext(&state.scheduler, &state.contexts[t]);
      if (state.error) std::rethrow_exception(state.error);
      if (state.done[t]) --alive;
    }
    if (alive > 0 && state.steps == before)
      throw std::logic_error(
          "grid emulation: the threads of a block wait at different "
          "barriers (a barrier inside divergent code)");
  }
}

inline void run(const Dim3& grid, const Dim3& block,
                const std::function<void()>& body) {
  grid_dim = grid;
  block_dim = block;
  state.body = &body;
  state.error = nullptr;
  for (unsigned int by = 0; by < grid.y; ++by)
    for (unsigned int bx = 0; bx < grid.x; ++bx) {
      block_idx = Dim3{bx, by, 0};
      if (state.fibers) {
        run_block_with_fibers(block.x);
        continue;
      }
      for (unsigned int t = 0; t < block.x; ++t) {
        thread_idx = Dim3{t, 0, 0};
        body();
      }
    }
}

template <typename Kernel, typename Config>
struct Launch {
  Kernel kernel;
  Dim3 grid, block;
  template <typename... Args>
  void operator()(Args... args) const {
    const std::function<void()> body = [&] { kernel(args...); };
    state.launches.insert(state.launches.end(),
                          {int64_t(grid.x), int64_t(grid.y), int64_t(block.x)});
    state.fibers = false;
    try {
      run(grid, block, body);
    } catch (const NeedsFibers&) {
      state.fibers = true;
      try {
        run(grid, block, body);
      } catch (...) {
        state.fibers = false;
        throw;
      }
      state.fibers = false;
    }
  }
};

// A launch with the configuration (grid_x, grid_y, block) of
// ghost_shift_common.h's LaunchConfig.
template <typename Kernel, typename Config>
Launch<Kernel, Config> launch(Kernel kernel, const Config& cfg) {
  if (cfg.grid_x < 1 || cfg.grid_x > 0x7fffffff || cfg.grid_y < 1 ||
      cfg.grid_y > 65535 || cfg.block < 1 || cfg.block > 1024)
    throw std::logic_error("grid emulation: launch configuration outside "
                           "CUDA's limits (grid " +
                           std::to_string(cfg.grid_x) + " x " +
                           std::to_string(cfg.grid_y) + ", block " +
                           std::to_string(cfg.block) + ")");
  return Launch<Kernel, Config>{
      kernel, Dim3{static_cast<unsigned int>(cfg.grid_x),
                   static_cast<unsigned int>(cfg.grid_y), 1},
      Dim3{static_cast<unsigned int>(cfg.block), 1, 1}};
}

}  // namespace grid_emulation

namespace ghostsr {
struct DeviceGuard {
  explicit DeviceGuard(c10::Device) {}
};
inline int current_stream() { return 0; }
}  // namespace ghostsr
