// A MindSpore CPU custom op (ops.Custom, func_type="aot") computing an f32 convolution with stride 1 and
// 'same' padding (the usual 3x3 layer) through oneDNN, the library MindSpore itself ships (libdnnl.so.3),
// with the memory format left to oneDNN ('any': an 8-channel blocked layout and its direct AVX2 kernel)
// and reorders from and to NCHW at the op's edges. MindSpore's own CPU Conv2D describes plain NCHW
// memory, for which oneDNN picks im2col + GEMM. Inputs: x (N,C,H,W), w (O,C,KH,KW), b (O); output
// (N,O,H,W); ConvSameBwdData and ConvSameBwdWeights are its gradients. Used by
// benchmarks/blocked_conv.py to measure what the blocked kernels would gain.
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
#include <unordered_map>
#include <utility>
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
using tag = memory::format_tag;
constexpr auto f32 = memory::data_type::f32;

/// The convolution's shapes from x (N,C,H,W) and w (O,C,KH,KW): stride 1, 'same' (TensorFlow's
/// SAME_UPPER: the odd pixel of an even kernel's padding goes to the bottom/right).
struct Geometry {
  memory::dims src, wei, bias, dst, pad_l, pad_r;
  std::vector<int64_t> key;
  Geometry(const int64_t *xs, const int64_t *ws)
      : src{xs[0], xs[1], xs[2], xs[3]}, wei{ws[0], ws[1], ws[2], ws[3]}, bias{ws[0]},
        dst{xs[0], ws[0], xs[2], xs[3]}, pad_l{(ws[2] - 1) / 2, (ws[3] - 1) / 2},
        pad_r{ws[2] - 1 - (ws[2] - 1) / 2, ws[3] - 1 - (ws[3] - 1) / 2},
        key{xs[0], xs[1], xs[2], xs[3], ws[0], ws[2], ws[3]} {}
  memory::desc any(const memory::dims &d) const { return memory::desc(d, f32, tag::any); }
};

/// A primitive with the blocked buffers it reads and writes, built once per geometry.
struct Entry {
  primitive prim;
  std::map<int, memory> blocked;  // argument id -> buffer in the primitive's own layout
};

struct State {
  engine eng{engine::kind::cpu, 0};
  Pool pool{std::max(1, std::atoi(std::getenv("BLOCKED_CONV_THREADS") ? std::getenv("BLOCKED_CONV_THREADS") : "2"))};
  stream strm = threadpool_interop::make_stream(eng, &pool);
  std::map<std::pair<int, std::vector<int64_t>>, std::unique_ptr<Entry>> cache;
  std::mutex mu;
};
State &state() { static State s; return s; }

convolution_forward::primitive_desc forward_pd(State &st, const Geometry &g, prop_kind kind) {
  return convolution_forward::primitive_desc(st.eng, kind, algorithm::convolution_direct, g.any(g.src), g.any(g.wei),
                                             memory::desc(g.bias, f32, tag::x), g.any(g.dst), {1, 1}, g.pad_l, g.pad_r);
}

/// Runs ``e.prim``: each plain input is reordered into its blocked buffer (or used as it is when the
/// layouts agree), each output is reordered back into its plain buffer.
void run(State &st, Entry &e, const std::map<int, memory> &inputs, const std::map<int, memory> &outputs) {
  std::unordered_map<int, memory> args;
  for (const auto &kv : inputs) {
    auto found = e.blocked.find(kv.first);
    if (found == e.blocked.end() || found->second.get_desc() == kv.second.get_desc()) {
      args[kv.first] = kv.second;
    } else {
      reorder(kv.second, found->second).execute(st.strm, const_cast<memory &>(kv.second), found->second);
      args[kv.first] = found->second;
    }
  }
  for (const auto &kv : outputs) {
    auto found = e.blocked.find(kv.first);
    bool same = found == e.blocked.end() || found->second.get_desc() == kv.second.get_desc();
    args[kv.first] = same ? kv.second : found->second;
  }
  e.prim.execute(st.strm, args);
  for (const auto &kv : outputs) {
    auto found = e.blocked.find(kv.first);
    if (found != e.blocked.end() && !(found->second.get_desc() == kv.second.get_desc()))
      reorder(found->second, kv.second).execute(st.strm, found->second, const_cast<memory &>(kv.second));
  }
  st.strm.wait();
}

memory plain(State &st, const memory::dims &d, tag t, void *data) { return memory(memory::desc(d, f32, t), st.eng, data); }

/// Runs the primitive of ``kind`` (0 forward, 1 data gradient, 2 weight gradient) at ``g``, built by
/// ``make()`` the first time, on the plain buffers.
template <typename Make>
int run_cached(int kind, const Geometry &g, Make make, const std::map<int, memory> &inputs,
               const std::map<int, memory> &outputs) {
  State &st = state();
  auto &slot = st.cache[{kind, g.key}];
  if (!slot) slot.reset(new Entry(make(st)));
  run(st, *slot, inputs, outputs);
  return 0;
}
}  // namespace

/// y = conv(x, w) + b.   x (N,C,H,W), w (O,C,KH,KW), b (O) -> y (N,O,H,W)
extern "C" int ConvSameFwd(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                           void *stream, void *extra) {
  if (nparam != 4) return 1;
  State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  Geometry g(shapes[0], shapes[1]);
  auto make = [&g](State &st) {
    auto pd = forward_pd(st, g, prop_kind::forward_training);
    return Entry{convolution_forward(pd), {{DNNL_ARG_SRC, memory(pd.src_desc(), st.eng)},
                                           {DNNL_ARG_WEIGHTS, memory(pd.weights_desc(), st.eng)},
                                           {DNNL_ARG_DST, memory(pd.dst_desc(), st.eng)}}};
  };
  return run_cached(0, g, make,
                    {{DNNL_ARG_SRC, plain(st, g.src, tag::nchw, params[0])},
                     {DNNL_ARG_WEIGHTS, plain(st, g.wei, tag::oihw, params[1])},
                     {DNNL_ARG_BIAS, plain(st, g.bias, tag::x, params[2])}},
                    {{DNNL_ARG_DST, plain(st, g.dst, tag::nchw, params[3])}});
}

/// dx from dy and w.   dy (N,O,H,W), w (O,C,KH,KW) -> dx (N,C,H,W)
extern "C" int ConvSameBwdData(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                               void *stream, void *extra) {
  if (nparam != 3) return 1;
  State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  const int64_t *dys = shapes[0], *ws = shapes[1];
  int64_t xs[4] = {dys[0], ws[1], dys[2], dys[3]};
  Geometry g(xs, ws);
  auto make = [&g](State &st) {
    auto pd = convolution_backward_data::primitive_desc(st.eng, algorithm::convolution_direct, g.any(g.src),
                                                        g.any(g.wei), g.any(g.dst), {1, 1}, g.pad_l, g.pad_r,
                                                        forward_pd(st, g, prop_kind::forward_training));
    return Entry{convolution_backward_data(pd), {{DNNL_ARG_DIFF_DST, memory(pd.diff_dst_desc(), st.eng)},
                                                 {DNNL_ARG_WEIGHTS, memory(pd.weights_desc(), st.eng)},
                                                 {DNNL_ARG_DIFF_SRC, memory(pd.diff_src_desc(), st.eng)}}};
  };
  return run_cached(1, g, make,
                    {{DNNL_ARG_DIFF_DST, plain(st, g.dst, tag::nchw, params[0])},
                     {DNNL_ARG_WEIGHTS, plain(st, g.wei, tag::oihw, params[1])}},
                    {{DNNL_ARG_DIFF_SRC, plain(st, g.src, tag::nchw, params[2])}});
}

/// dw and db from x and dy (w for its shape).   x, dy, w -> dw (O,C,KH,KW), db (O)
extern "C" int ConvSameBwdWeights(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                  void *stream, void *extra) {
  if (nparam != 5) return 1;
  State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  Geometry g(shapes[0], shapes[2]);
  auto make = [&g](State &st) {
    auto pd = convolution_backward_weights::primitive_desc(
        st.eng, algorithm::convolution_direct, g.any(g.src), g.any(g.wei), memory::desc(g.bias, f32, tag::x),
        g.any(g.dst), {1, 1}, g.pad_l, g.pad_r, forward_pd(st, g, prop_kind::forward_training));
    return Entry{convolution_backward_weights(pd), {{DNNL_ARG_SRC, memory(pd.src_desc(), st.eng)},
                                                    {DNNL_ARG_DIFF_DST, memory(pd.diff_dst_desc(), st.eng)},
                                                    {DNNL_ARG_DIFF_WEIGHTS, memory(pd.diff_weights_desc(), st.eng)}}};
  };
  return run_cached(2, g, make,
                    {{DNNL_ARG_SRC, plain(st, g.src, tag::nchw, params[0])},
                     {DNNL_ARG_DIFF_DST, plain(st, g.dst, tag::nchw, params[1])}},
                    {{DNNL_ARG_DIFF_WEIGHTS, plain(st, g.wei, tag::oihw, params[3])},
                     {DNNL_ARG_DIFF_BIAS, plain(st, g.bias, tag::x, params[4])}});
}
