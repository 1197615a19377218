// A MindSpore CPU custom op (ops.Custom, func_type="aot") computing an f32 2-D convolution (any kernel,
// stride and dilation, one group) through oneDNN, the library MindSpore itself ships (libdnnl.so.3), with
// the memory format left to oneDNN ('any': an 8-channel blocked layout and its direct AVX2 kernel) and
// reorders from and to NCHW at the op's edges. MindSpore's own CPU Conv2D describes plain NCHW memory, for
// which oneDNN picks im2col + GEMM (docs/performance.md). geocli/runtime/blocked_conv.py builds this file
// and swaps it in for nn.Conv2d.
//
// Inputs: x (N,C,H,W), w (O,C,KH,KW), b (O), g (10 int64: same, stride h/w, dilation h/w, pad top/bottom/
// left/right, relu; same=1 computes the pads from the input size like MindSpore's pad_mode 'same',
// SAME_UPPER; relu=1 applies a ReLU to the output inside the convolution, a oneDNN post-op, for inference
// copies only: no gradient is defined for it); output y (N,O,OH,OW). ConvBwdData (x for its shape, dy, w,
// g -> dx) and ConvBwdWeights (x, dy, w, g -> dw, db) are its gradients. Each entry point checks the
// output shapes MindSpore allocated against its own.
//
// MindSpore's oneDNN is built with the threadpool runtime: without a threadpool oneDNN runs on one
// thread, so this file brings a small persistent pool of its own (GEOLOC_CONV_THREADS, default 2).
#include <oneapi/dnnl/dnnl.hpp>
#include <oneapi/dnnl/dnnl_threadpool.hpp>
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <condition_variable>
#include <cstdint>
#include <string>
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

/// The convolution's shapes from x (N,C,H,W), w (O,C,KH,KW) and the geometry g (see the file's head).
struct Geometry {
  static constexpr int64_t kValues = 10;  // the length of g
  memory::dims src, wei, bias, dst, strides, dilates, pad_l, pad_r;
  bool relu;
  std::vector<int64_t> key;
  Geometry(const int64_t *xs, const int64_t *ws, const int64_t *g)
      : src{xs[0], xs[1], xs[2], xs[3]}, wei{ws[0], ws[1], ws[2], ws[3]}, bias{ws[0]}, dst{xs[0], ws[0], 0, 0},
        strides{g[1], g[2]}, dilates{g[3] - 1, g[4] - 1}, pad_l{0, 0}, pad_r{0, 0}, relu(g[9] != 0) {
    for (int i = 0; i < 2; ++i) {
      int64_t in = xs[2 + i], stride = g[1 + i], extent = (ws[2 + i] - 1) * g[3 + i] + 1;
      if (g[0]) {
        int64_t out = (in + stride - 1) / stride, total = std::max<int64_t>((out - 1) * stride + extent - in, 0);
        pad_l[i] = total / 2;
        pad_r[i] = total - total / 2;
      } else {
        pad_l[i] = g[5 + 2 * i];
        pad_r[i] = g[6 + 2 * i];
      }
      dst[2 + i] = (in + pad_l[i] + pad_r[i] - extent) / stride + 1;
    }
    key = {xs[0], xs[1], xs[2], xs[3], ws[0], ws[2], ws[3], g[1], g[2], g[3], g[4],
           pad_l[0], pad_l[1], pad_r[0], pad_r[1], relu};
  }
  memory::desc any(const memory::dims &d) const { return memory::desc(d, f32, tag::any); }
  bool is(const memory::dims &d, const int64_t *shape, int n) const {
    return (int)d.size() == n && std::equal(d.begin(), d.end(), shape);
  }
};

/// A primitive with the blocked buffers it reads and writes, built once per geometry.
struct Entry {
  primitive prim;
  std::map<int, memory> blocked;  // argument id -> buffer in the primitive's own layout
};

struct State {
  engine eng{engine::kind::cpu, 0};
  Pool pool{std::max(1, std::atoi(std::getenv("GEOLOC_CONV_THREADS") ? std::getenv("GEOLOC_CONV_THREADS") : "2"))};
  stream strm = threadpool_interop::make_stream(eng, &pool);
  std::map<std::pair<int, std::vector<int64_t>>, std::unique_ptr<Entry>> cache;
  std::mutex mu;
};
State &state() { static State s; return s; }

/// The forward primitive's descriptor, with the ReLU post-op when ``g.relu`` (also, without it, the hint
/// both gradients are built from). forward_training even for inference: oneDNN then picks its direct AVX2
/// kernel, which ran SDNet's layers as fast as or faster than forward_inference's brgemm kernel here
/// (docs/performance.md, "One-channel inputs and ReLUs in inference copies").
convolution_forward::primitive_desc forward_pd(State &st, const Geometry &g, bool with_relu) {
  post_ops ops;
  if (with_relu) ops.append_eltwise(algorithm::eltwise_relu, 0.f, 0.f);
  primitive_attr attr;
  attr.set_post_ops(ops);
  return convolution_forward::primitive_desc(st.eng, prop_kind::forward_training, algorithm::convolution_direct,
                                             g.any(g.src), g.any(g.wei),
                                             memory::desc(g.bias, f32, tag::x), g.any(g.dst), g.strides, g.dilates,
                                             g.pad_l, g.pad_r, attr);
}

/// Whether the data gradient runs with dy and dx on the 8-channel blocked layout instead of the layout
/// oneDNN picks: for a strided convolution it picks its brgemm kernel on NHWC, whose transposes from and
/// to NCHW cost more than the kernel saves below 512 input channels (SDNet's 32->32 stride-2 layer, batch
/// 64 at 64 px: 17.6 against 12.3 ms; a 1x1 stride-2 256->512 layer, batch 16 at 56 px: 41.5 against 29.5),
/// while at 512 (512->512 stride 2 at 14 px) brgemm won, 32.6 against 37.6 ms. Channel counts that are not
/// multiples of 8 stay with oneDNN's choice (a 3-channel input on the blocked layout ran for minutes).
bool blocked_data_gradient(const Geometry &g) {
  bool strided = g.strides[0] > 1 || g.strides[1] > 1;
  return strided && g.src[1] % 8 == 0 && g.dst[1] % 8 == 0 && g.src[1] < 512;
}

/// Whether an entry point got ``count`` parameters (inputs and outputs), float32 data and the int64
/// geometry of Geometry::kValues values as its fourth input.
bool expected_inputs(int nparam, int count, const int *ndims, int64_t *const *shapes, const char *const *dtypes) {
  return nparam == count && std::string(dtypes[0]) == "float32" && std::string(dtypes[3]) == "int64" &&
         ndims[3] == 1 && shapes[3][0] == Geometry::kValues;
}

/// The buffer ``e.prim`` uses for argument ``id`` given as ``plain``: its own blocked buffer when the
/// layouts differ, else ``plain`` itself.
const memory &own(const Entry &e, int id, const memory &plain) {
  auto found = e.blocked.find(id);
  return found == e.blocked.end() || found->second.get_desc() == plain.get_desc() ? plain : found->second;
}

/// Reorders ``from`` into ``to`` (the same values, another layout).
void copy(State &st, const memory &from, const memory &to) {
  reorder(from, to).execute(st.strm, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}});
}

/// Runs ``e.prim``: each plain input is reordered into the primitive's own buffer where their layouts
/// differ, and each output back into its plain buffer.
void run(State &st, const Entry &e, const std::map<int, memory> &inputs, const std::map<int, memory> &outputs) {
  std::unordered_map<int, memory> args;
  for (const auto &kv : inputs) {
    const memory &used = own(e, kv.first, kv.second);
    if (&used != &kv.second) copy(st, kv.second, used);
    args[kv.first] = used;
  }
  for (const auto &kv : outputs) args[kv.first] = own(e, kv.first, kv.second);
  e.prim.execute(st.strm, args);
  for (const auto &kv : outputs) {
    const memory &used = own(e, kv.first, kv.second);
    if (&used != &kv.second) copy(st, used, kv.second);
  }
  st.strm.wait();
}

memory plain(State &st, const memory::dims &d, tag t, void *data) {
  return memory(memory::desc(d, f32, t), st.eng, data);
}

/// Runs the primitive of ``kind`` (0 forward, 1 data gradient, 2 weight gradient) at ``g``, built by
/// ``make()`` the first time, on the plain buffers.
template <typename Make>
int run_cached(int kind, const Geometry &g, Make make, const std::map<int, memory> &inputs,
               const std::map<int, memory> &outputs) {
  State &st = state();
  std::lock_guard<std::mutex> lock(st.mu);  // the cache, the buffers, the stream and its pool are shared
  auto &slot = st.cache[{kind, g.key}];
  if (!slot) slot.reset(new Entry(make(st)));
  run(st, *slot, inputs, outputs);
  return 0;
}
}  // namespace

/// y = conv(x, w) + b.   x (N,C,H,W), w (O,C,KH,KW), b (O), g -> y (N,O,OH,OW)
extern "C" int ConvFwd(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                       void *stream, void *extra) {
  if (!expected_inputs(nparam, 5, ndims, shapes, dtypes)) return 1;
  State &st = state();
  Geometry g(shapes[0], shapes[1], static_cast<const int64_t *>(params[3]));
  if (!g.is(g.dst, shapes[4], ndims[4])) return 2;
  auto make = [&g](State &st) {
    auto pd = forward_pd(st, g, g.relu);
    return Entry{convolution_forward(pd), {{DNNL_ARG_SRC, memory(pd.src_desc(), st.eng)},
                                           {DNNL_ARG_WEIGHTS, memory(pd.weights_desc(), st.eng)},
                                           {DNNL_ARG_DST, memory(pd.dst_desc(), st.eng)}}};
  };
  return run_cached(0, g, make,
                    {{DNNL_ARG_SRC, plain(st, g.src, tag::nchw, params[0])},
                     {DNNL_ARG_WEIGHTS, plain(st, g.wei, tag::oihw, params[1])},
                     {DNNL_ARG_BIAS, plain(st, g.bias, tag::x, params[2])}},
                    {{DNNL_ARG_DST, plain(st, g.dst, tag::nchw, params[4])}});
}

/// dx from dy and w (x gives dx's shape, which a strided convolution's dy does not determine).
///   x (N,C,H,W), dy (N,O,OH,OW), w (O,C,KH,KW), g -> dx (N,C,H,W)
extern "C" int ConvBwdData(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                           void *stream, void *extra) {
  if (!expected_inputs(nparam, 5, ndims, shapes, dtypes)) return 1;
  State &st = state();
  Geometry g(shapes[0], shapes[2], static_cast<const int64_t *>(params[3]));
  if (!g.is(g.dst, shapes[1], ndims[1]) || !g.is(g.src, shapes[4], ndims[4])) return 2;
  auto make = [&g](State &st) {
    bool blocked = blocked_data_gradient(g);
    auto fmt = [&](const memory::dims &d) { return blocked ? memory::desc(d, f32, tag::nChw8c) : g.any(d); };
    auto pd = convolution_backward_data::primitive_desc(st.eng, algorithm::convolution_direct, fmt(g.src),
                                                        g.any(g.wei), fmt(g.dst), g.strides, g.dilates, g.pad_l,
                                                        g.pad_r, forward_pd(st, g, false));
    return Entry{convolution_backward_data(pd), {{DNNL_ARG_DIFF_DST, memory(pd.diff_dst_desc(), st.eng)},
                                                 {DNNL_ARG_WEIGHTS, memory(pd.weights_desc(), st.eng)},
                                                 {DNNL_ARG_DIFF_SRC, memory(pd.diff_src_desc(), st.eng)}}};
  };
  return run_cached(1, g, make,
                    {{DNNL_ARG_DIFF_DST, plain(st, g.dst, tag::nchw, params[1])},
                     {DNNL_ARG_WEIGHTS, plain(st, g.wei, tag::oihw, params[2])}},
                    {{DNNL_ARG_DIFF_SRC, plain(st, g.src, tag::nchw, params[4])}});
}

/// dw and db from x and dy (w for its shape).   x, dy, w, g -> dw (O,C,KH,KW), db (O)
extern "C" int ConvBwdWeights(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                              void *stream, void *extra) {
  if (!expected_inputs(nparam, 6, ndims, shapes, dtypes)) return 1;
  State &st = state();
  Geometry g(shapes[0], shapes[2], static_cast<const int64_t *>(params[3]));
  if (!g.is(g.dst, shapes[1], ndims[1]) || !g.is(g.wei, shapes[4], ndims[4])) return 2;
  auto make = [&g](State &st) {
    auto pd = convolution_backward_weights::primitive_desc(
        st.eng, algorithm::convolution_direct, g.any(g.src), g.any(g.wei), memory::desc(g.bias, f32, tag::x),
        g.any(g.dst), g.strides, g.dilates, g.pad_l, g.pad_r, forward_pd(st, g, false));
    return Entry{convolution_backward_weights(pd), {{DNNL_ARG_SRC, memory(pd.src_desc(), st.eng)},
                                                    {DNNL_ARG_DIFF_DST, memory(pd.diff_dst_desc(), st.eng)},
                                                    {DNNL_ARG_DIFF_WEIGHTS, memory(pd.diff_weights_desc(), st.eng)}}};
  };
  return run_cached(2, g, make,
                    {{DNNL_ARG_SRC, plain(st, g.src, tag::nchw, params[0])},
                     {DNNL_ARG_DIFF_DST, plain(st, g.dst, tag::nchw, params[1])}},
                    {{DNNL_ARG_DIFF_WEIGHTS, plain(st, g.wei, tag::oihw, params[4])},
                     {DNNL_ARG_DIFF_BIAS, plain(st, g.bias, tag::x, params[5])}});
}
