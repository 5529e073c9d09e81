#include "common/thread_pool.h"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

namespace fastemb {
namespace {

thread_local bool t_inside_task = false;

int default_threads() {
  if (const char* env = std::getenv("FASTEMB_NUM_THREADS"); env && *env) {
    char* end = nullptr;
    long n = std::strtol(env, &end, 10);
    if (end && *end == '\0' && n >= 1) return static_cast<int>(std::min<long>(n, 1024));
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw ? static_cast<int>(hw) : 1;
}

class Pool;
Pool* pool_instance();

class Pool {
 public:
  Pool() : num_threads_(default_threads()) {}

  // fork() copies only the calling thread. Holding both locks across fork() guarantees that no
  // worker is inside a critical section; the child then drops the (absent) workers and starts
  // with fresh condition variables, and builds new workers on its first parallel job.
  void before_fork() {
    run_mutex_.lock();
    mutex_.lock();
  }
  void after_fork_parent() {
    mutex_.unlock();
    run_mutex_.unlock();
  }
  void after_fork_child() {
    workers_.clear();  // their threads do not exist here: leak the handles, never join or detach
    generation_ = 0;
    stopping_ = false;
    pending_workers_ = 0;
    new (&wake_) std::condition_variable();
    new (&done_) std::condition_variable();
    mutex_.unlock();
    run_mutex_.unlock();
  }

  int num_threads() const { return num_threads_.load(); }

  void set_num_threads(int n) {
    std::lock_guard<std::mutex> run_lock(run_mutex_);  // waits for the job in flight
    stop_workers();
    num_threads_.store(std::max(1, n));
  }

  void run(int64_t num_tasks, void (*task)(void*, int64_t), void* context) {
    if (num_tasks <= 0) return;
    std::unique_lock<std::mutex> run_lock(run_mutex_, std::try_to_lock);
    const int threads = num_threads_.load();
    if (t_inside_task || !run_lock.owns_lock() || threads <= 1 || num_tasks == 1) {
      run_inline(num_tasks, task, context);
      return;
    }
    ensure_workers(threads - 1);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = task;
      context_ = context;
      num_tasks_ = num_tasks;
      next_.store(0);
      pending_workers_ = static_cast<int>(workers_.size());
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    work_loop();  // the caller works too
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return pending_workers_ == 0; });
    task_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  static void run_inline(int64_t num_tasks, void (*task)(void*, int64_t), void* context) {
    const bool was_inside = t_inside_task;
    t_inside_task = true;
    try {
      for (int64_t i = 0; i < num_tasks; ++i) task(context, i);
    } catch (...) {
      t_inside_task = was_inside;
      throw;
    }
    t_inside_task = was_inside;
  }

  void work_loop() {
    t_inside_task = true;
    for (;;) {
      const int64_t i = next_.fetch_add(1);
      if (i >= num_tasks_) break;
      try {
        task_(context_, i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
        next_.store(num_tasks_);  // stop handing out tasks
      }
    }
    t_inside_task = false;
  }

  void worker_main(uint64_t seen_generation) {
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || generation_ != seen_generation; });
        if (stopping_) return;
        seen_generation = generation_;
      }
      work_loop();
      std::lock_guard<std::mutex> lock(mutex_);
      if (--pending_workers_ == 0) done_.notify_all();
    }
  }

  void ensure_workers(int count) {
    if (static_cast<int>(workers_.size()) == count) return;
    stop_workers();
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = false;
    for (int i = 0; i < count; ++i) workers_.push_back(new std::thread(&Pool::worker_main, this, generation_));
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (std::thread* t : workers_) {
      t->join();
      delete t;
    }
    workers_.clear();
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = false;
  }

  std::atomic<int> num_threads_;
  std::mutex run_mutex_;  // one parallel job at a time
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread*> workers_;  // raw pointers: after fork they are leaked, never joined
  uint64_t generation_ = 0;
  bool stopping_ = false;
  void (*task_)(void*, int64_t) = nullptr;
  void* context_ = nullptr;
  int64_t num_tasks_ = 0;
  std::atomic<int64_t> next_{0};
  int pending_workers_ = 0;
  std::exception_ptr error_;
};

Pool* g_pool = nullptr;
Pool* pool_instance() { return g_pool; }

Pool* make_pool() {
  Pool* p = new Pool();
  g_pool = p;
  pthread_atfork([] { pool_instance()->before_fork(); }, [] { pool_instance()->after_fork_parent(); },
                 [] { pool_instance()->after_fork_child(); });
  return p;
}

Pool& pool() {
  // Leaked on purpose: joining threads during interpreter shutdown can deadlock.
  static Pool* p = make_pool();
  return *p;
}

}  // namespace

int get_num_threads() { return pool().num_threads(); }
void set_num_threads(int n) { pool().set_num_threads(n); }
void parallel_for_raw(int64_t num_tasks, void (*task)(void*, int64_t), void* context) { pool().run(num_tasks, task, context); }

}  // namespace fastemb
