// The core's parallel-for (an Exec, see core.h's for_each_item) on plain std::threads, for the
// front-ends that have no thread pool of their own to lend the kernel: the ONNX Runtime and the
// ExecuTorch custom-op libraries. (The ATen front-end uses at::parallel_for.)
#pragma once

#include <sched.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace sparseformer_cpu {

// run(t, fn) calls fn() on t threads, this one included, and returns when all have returned; the
// first exception thrown by any of them is rethrown here.
struct ThreadExec {
  int64_t threads;
  int64_t max_threads() const { return threads; }
  template <typename F>
  void run(int64_t nthreads, F&& f) const {
    std::exception_ptr error;
    std::mutex error_lock;
    auto guarded = [&]() {
      try {
        f();
      } catch (...) {
        std::lock_guard<std::mutex> g(error_lock);
        if (!error) error = std::current_exception();
      }
    };
    std::vector<std::thread> pool;
    pool.reserve(static_cast<size_t>(nthreads - 1));
    for (int64_t t = 1; t < nthreads; ++t) pool.emplace_back(guarded);
    guarded();
    for (auto& th : pool) th.join();
    if (error) std::rethrow_exception(error);
  }
};

// The number of CPUs this process may run on (sched_getaffinity), at least 1.
inline int64_t available_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace sparseformer_cpu
