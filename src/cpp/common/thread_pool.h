// fastemb's own small thread pool (not OpenMP: torch and numpy ship their own OpenMP runtimes,
// and mixing them oversubscribes or crashes).
#pragma once
#include <cstdint>
#include <functional>

namespace fastemb {

// Threads used by parallel_for: FASTEMB_NUM_THREADS at first use, else the hardware count.
int get_num_threads();
// Changes the thread count (n >= 1). Safe while other threads run kernels: it waits for the
// parallel_for in flight to finish.
void set_num_threads(int n);

// Runs task(i) for every i in [0, num_tasks), spread over the pool; the calling thread takes
// part. Tasks are taken dynamically, so a task must write only its own outputs: results then do
// not depend on the thread count. Nested calls, and calls while another thread holds the pool,
// run inline on the caller. The first exception thrown by a task is rethrown here.
void parallel_for_raw(int64_t num_tasks, void (*task)(void* context, int64_t index), void* context);

inline void parallel_for(int64_t num_tasks, const std::function<void(int64_t)>& task) {
  parallel_for_raw(num_tasks, [](void* c, int64_t i) { (*static_cast<const std::function<void(int64_t)>*>(c))(i); },
                   const_cast<std::function<void(int64_t)>*>(&task));
}

// For per-ISA translation units: no std::function (its out-of-line members would be compiled
// with that TU's ISA flags and could be picked by the linker for every caller). `static` gives
// each TU its own copy.
template <class F>
static inline void parallel_for_each(int64_t num_tasks, F& task) {
  parallel_for_raw(num_tasks, [](void* c, int64_t i) { (*static_cast<F*>(c))(i); }, &task);
}

}  // namespace fastemb
