// A MindSpore CPU custom op (ops.Custom, func_type="aot") computing an f32 convolution with stride 1 and
// 'same' padding (the usual 3x3 layer) through oneDNN, the library MindSpore itself ships (libdnnl.so.3),
// with the memory format left to oneDNN ('any': an 8-channel blocked layout and its direct AVX2 kernel)
// and reorders from and to NCHW at the op's edges. MindSpore's own CPU Conv2D describes plain NCHW
// memory, for which oneDNN picks im2col + GEMM. Inputs: x (N,C,H,W), w (O,C,KH,KW), b (O); output
// (N,O,H,W). Used by benchmarks/blocked_conv.py to measure what the blocked kernel would gain.
//
// MindSpore's oneDNN is built with the threadpool runtime: without a threadpool oneDNN runs on one
// thread, so this file brings a small persistent pool of its own (BLOCKED_CONV_THREADS, default 2).
#include <oneapi/dnnl/dnnl.hpp>
#include <oneapi/dnnl/dnnl_threadpool.hpp>
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>
using namespace dnnl;

// A persistent pool: the caller runs its share of each parallel_for, the workers wait on a condition
// variable between calls.
struct Pool : threadpool_interop::threadpool_iface {
  explicit Pool(int n) : n_(n) {
    for (int t = 1; t < n_; ++t) workers_.emplace_back([this] { loop(); });
  }
  ~Pool() override {
    { std::lock_guard<std::mutex> lock(mu_); stop_ = true; ++generation_; }
    cv_.notify_all();
    for (auto &w : workers_) w.join();
  }
  int get_num_threads() const override { return n_; }
  bool get_in_parallel() const override { return in_; }
  uint64_t get_flags() const override { return 0; }
  void wait() override {}
  void parallel_for(int n, const std::function<void(int, int)> &fn) override {
    if (n_ == 1 || n == 1 || in_) { for (int i = 0; i < n; ++i) fn(i, n); return; }
    {
      std::lock_guard<std::mutex> lock(mu_);
      fn_ = &fn; total_ = n; next_ = 0; pending_ = (int)workers_.size(); ++generation_;
    }
    cv_.notify_all();
    run();
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return pending_ == 0; });
  }

 private:
  void run() {
    in_ = true;
    for (int i; (i = next_++) < total_;) (*fn_)(i, total_);
    in_ = false;
  }
  void loop() {
    long seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (stop_) return;
      }
      run();
      { std::lock_guard<std::mutex> lock(mu_); --pending_; }
      done_.notify_one();
    }
  }
  int n_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_;
  const std::function<void(int, int)> *fn_ = nullptr;
  std::atomic<int> next_{0};
  int total_ = 0, pending_ = 0;
  long generation_ = 0;
  bool stop_ = false;
  static thread_local bool in_;
};
thread_local bool Pool::in_ = false;

namespace {
struct Cached {
  convolution_forward::primitive_desc pd;
  convolution_forward conv;
  memory src_b, wei_b, dst_b;
};
struct State {
  engine eng{engine::kind::cpu, 0};
  Pool pool{std::max(1, std::atoi(std::getenv("BLOCKED_CONV_THREADS") ? std::getenv("BLOCKED_CONV_THREADS") : "2"))};
  stream strm = threadpool_interop::make_stream(eng, &pool);
  std::map<std::vector<int64_t>, std::unique_ptr<Cached>> cache;
  std::mutex mu;
};
State &state() { static State s; return s; }
}  // namespace

extern "C" int ConvSameFwd(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                           void *stream, void *extra) {
  if (nparam != 4) return 1;
  State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  int64_t *xs = shapes[0], *ws = shapes[1];
  memory::dims src_d = {xs[0], xs[1], xs[2], xs[3]}, w_d = {ws[0], ws[1], ws[2], ws[3]}, b_d = {ws[0]};
  memory::dims dst_d = {xs[0], ws[0], xs[2], xs[3]};
  int64_t ph = (ws[2] - 1) / 2, pw = (ws[3] - 1) / 2;
  memory::dims pad_l = {ph, pw}, pad_r = {ws[2] - 1 - ph, ws[3] - 1 - pw};
  std::vector<int64_t> key = {xs[0], xs[1], xs[2], xs[3], ws[0], ws[2], ws[3]};
  using tag = memory::format_tag;
  auto dt = memory::data_type::f32;
  auto &slot = st.cache[key];
  if (!slot) {
    auto pd = convolution_forward::primitive_desc(st.eng, prop_kind::forward_inference, algorithm::convolution_direct,
        memory::desc(src_d, dt, tag::any), memory::desc(w_d, dt, tag::any), memory::desc(b_d, dt, tag::x),
        memory::desc(dst_d, dt, tag::any), {1, 1}, pad_l, pad_r);
    slot.reset(new Cached{pd, convolution_forward(pd), memory(pd.src_desc(), st.eng), memory(pd.weights_desc(), st.eng),
                          memory(pd.dst_desc(), st.eng)});
  }
  Cached &c = *slot;
  memory x(memory::desc(src_d, dt, tag::nchw), st.eng, params[0]);
  memory w(memory::desc(w_d, dt, tag::oihw), st.eng, params[1]);
  memory b(memory::desc(b_d, dt, tag::x), st.eng, params[2]);
  memory y(memory::desc(dst_d, dt, tag::nchw), st.eng, params[3]);
  reorder(x, c.src_b).execute(st.strm, x, c.src_b);
  reorder(w, c.wei_b).execute(st.strm, w, c.wei_b);
  c.conv.execute(st.strm, {{DNNL_ARG_SRC, c.src_b}, {DNNL_ARG_WEIGHTS, c.wei_b}, {DNNL_ARG_BIAS, b}, {DNNL_ARG_DST, c.dst_b}});
  reorder(c.dst_b, y).execute(st.strm, c.dst_b, y);
  st.strm.wait();
  return 0;
}
