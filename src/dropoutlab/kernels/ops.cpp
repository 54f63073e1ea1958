/*
 * dropoutlab's native kernels as PyTorch operators (Srivastava et al., JMLR 2014, §4 and §10).
 *
 * Compiled on first use by dropoutlab/kernels/_build.py together with dropout.c and loaded with
 * torch.ops.load_library. Registering the kernels with the dispatcher (instead of calling them
 * through ctypes from a Python autograd.Function) makes each one a single opaque operator that
 * torch.compile, torch.export, AOT autograd and functorch see with a known output (the fake
 * implementations and vmap rules are in dropoutlab/kernels/ops.py), and it takes the Python
 * interpreter out of the per-call path in eager mode.
 *
 * Operators (namespace dropoutlab):
 *
 *   seed(x, generator)                  one int64 draw, exactly the seed the ctypes path drew:
 *                                       torch.empty((), dtype=int64).random_(generator=...)
 *   dropout(x, seed, p, factor)         y = x * (kept ? factor : 0), mask from (seed, index)
 *   gaussian(x, seed, sigma)            y = x * (1 + sigma * z)
 *   relu_dropout(x, seed, p, factor)    y = relu(x) * (kept ? factor : 0)
 *   relu_dropout_backward(g, x, seed, p, factor)
 *   draw_dropout(x, p, factor, generator), draw_gaussian(x, sigma, generator),
 *   draw_relu_dropout(x, p, factor, generator)
 *                                       seed, then the op: one call from Python instead of two
 *                                       (composite, so compilers and transforms see the two)
 *
 * The random ops are pure functions of (x, seed): drawing the seed is its own operator, tagged
 * nondeterministic_seeded, so compilers never merge, reorder or recompute the draw, and the
 * backward pass regenerates the mask from the seed (nothing per element is saved).
 *
 * Dtypes: float32, float64, bfloat16 and float16 (the 16-bit ones computed in float32 and
 * rounded once, see dropout.c), CPU only.
 *
 * Memory order: a contiguous input is walked in its logical order. A channels_last(_3d) input is
 * walked in memory order and the output keeps that format (as torch's dropout does). Any other
 * strides are first copied to a contiguous tensor. Backward brings the gradient into the
 * forward's memory format first, so each element meets its own mask.
 *
 * The autograd kernels are written as plain autograd Nodes, like PyTorch's generated ones,
 * rather than torch::autograd::Function, which functorch (grad, vmap) refuses.
 */

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>

extern "C" {
#define DL_DECLARE(S, C, SUFFIX)                                                                \
    void dl_dropout_##SUFFIX(const S *, S *, int64_t, uint64_t, uint32_t, C, int);             \
    void dl_gaussian_##SUFFIX(const S *, S *, int64_t, uint64_t, C, int);                      \
    void dl_relu_dropout_##SUFFIX(const S *, S *, int64_t, uint64_t, uint32_t, C, int);        \
    void dl_relu_dropout_grad_##SUFFIX(const S *, const S *, S *, int64_t, uint64_t, uint32_t, \
                                       C, int);
DL_DECLARE(float, float, f32)
DL_DECLARE(double, double, f64)
DL_DECLARE(uint16_t, float, bf16)  // bfloat16 storage, computed in float (dropout.c)
DL_DECLARE(uint16_t, float, f16)   // IEEE float16 storage, computed in float
#undef DL_DECLARE
}

namespace {

using torch::autograd::variable_list;

/* The memory order the kernels walk for x (see the header). */
at::MemoryFormat walk_format(const at::Tensor &x) {
    if (x.is_contiguous()) return at::MemoryFormat::Contiguous;
    if (x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast))
        return at::MemoryFormat::ChannelsLast;
    if (x.dim() == 5 && x.is_contiguous(at::MemoryFormat::ChannelsLast3d))
        return at::MemoryFormat::ChannelsLast3d;
    return at::MemoryFormat::Contiguous;
}

/* round(p * 2^32) capped at 2^32 - 1: dropoutlab.kernels.drop_threshold (round half to even in
 * both, and p * 2^32 is exact in a double). */
uint32_t drop_threshold(double p) {
    double t = std::nearbyint(p * 4294967296.0);
    return t >= 4294967295.0 ? 0xffffffffu : static_cast<uint32_t>(t);
}

void check_input(const at::Tensor &x, const char *op, const char *name) {
    TORCH_CHECK(x.device().is_cpu(), "dropoutlab::", op, ": `", name,
                "` must be a CPU tensor, got device=", x.device());
    at::ScalarType t = x.scalar_type();
    TORCH_CHECK(t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf,
                "dropoutlab::", op, ": `", name,
                "` must be float32, float64, bfloat16 or float16, got dtype=", t);
}

/* Storage pointers for the C kernels: 16-bit tensors pass their bits as uint16_t. */
template <typename S>
const S *in(const at::Tensor &t) {
    return static_cast<const S *>(t.const_data_ptr());
}
template <typename S>
S *out_ptr(at::Tensor &t) {
    return static_cast<S *>(t.mutable_data_ptr());
}

/* KERNEL##_<suffix>(ARGS) for dtype t, with S the storage type and C the compute type (float for
 * the 16-bit ones) in scope for ARGS. check_input has already admitted t. */
#define DL_CALL(t, KERNEL, ...)                                                             \
    do {                                                                                    \
        if ((t) == at::kFloat) {                                                            \
            using S = float;                                                                \
            using C = float;                                                                \
            KERNEL##_f32(__VA_ARGS__);                                                      \
        } else if ((t) == at::kDouble) {                                                    \
            using S = double;                                                               \
            using C = double;                                                               \
            KERNEL##_f64(__VA_ARGS__);                                                      \
        } else if ((t) == at::kBFloat16) {                                                  \
            using S = uint16_t;                                                             \
            using C = float;                                                                \
            KERNEL##_bf16(__VA_ARGS__);                                                     \
        } else {                                                                            \
            using S = uint16_t;                                                             \
            using C = float;                                                                \
            KERNEL##_f16(__VA_ARGS__);                                                      \
        }                                                                                   \
    } while (0)

uint64_t seed_value(const at::Tensor &seed, const char *op) {
    TORCH_CHECK(seed.dim() == 0 && seed.scalar_type() == at::kLong && seed.device().is_cpu(),
                "dropoutlab::", op, ": `seed` must be a 0-dim int64 CPU tensor, got shape=",
                seed.sizes(), " dtype=", seed.scalar_type(), " device=", seed.device());
    return static_cast<uint64_t>(*seed.const_data_ptr<int64_t>());
}

/* ---- CPU kernels ---------------------------------------------------------------------------- */

at::Tensor seed_cpu(const at::Tensor &x, std::optional<at::Generator> generator) {
    at::Tensor seed = at::empty({}, x.options().dtype(at::kLong));
    seed.random_(std::move(generator));
    return seed;
}

at::Tensor dropout_cpu(const at::Tensor &x, const at::Tensor &seed, double p, double factor) {
    check_input(x, "dropout", "x");
    at::Tensor src = x.contiguous(walk_format(x));
    at::Tensor out = at::empty_like(src);
    uint64_t s = seed_value(seed, "dropout");
    uint32_t thr = drop_threshold(p);
    DL_CALL(src.scalar_type(), dl_dropout, in<S>(src), out_ptr<S>(out), src.numel(), s, thr,
            static_cast<C>(factor), at::get_num_threads());
    return out;
}

at::Tensor gaussian_cpu(const at::Tensor &x, const at::Tensor &seed, double sigma) {
    check_input(x, "gaussian", "x");
    at::Tensor src = x.contiguous(walk_format(x));
    at::Tensor out = at::empty_like(src);
    uint64_t s = seed_value(seed, "gaussian");
    DL_CALL(src.scalar_type(), dl_gaussian, in<S>(src), out_ptr<S>(out), src.numel(), s,
            static_cast<C>(sigma), at::get_num_threads());
    return out;
}

at::Tensor relu_dropout_cpu(const at::Tensor &x, const at::Tensor &seed, double p,
                            double factor) {
    check_input(x, "relu_dropout", "x");
    at::Tensor src = x.contiguous(walk_format(x));
    at::Tensor out = at::empty_like(src);
    uint64_t s = seed_value(seed, "relu_dropout");
    uint32_t thr = drop_threshold(p);
    DL_CALL(src.scalar_type(), dl_relu_dropout, in<S>(src), out_ptr<S>(out), src.numel(), s, thr,
            static_cast<C>(factor), at::get_num_threads());
    return out;
}

at::Tensor relu_dropout_backward_cpu(const at::Tensor &grad, const at::Tensor &x,
                                     const at::Tensor &seed, double p, double factor) {
    check_input(x, "relu_dropout_backward", "x");
    at::MemoryFormat format = walk_format(x);
    at::Tensor src = x.contiguous(format);
    at::Tensor g = grad.to(src.scalar_type()).contiguous(format);
    TORCH_CHECK(g.sizes() == src.sizes(), "dropoutlab::relu_dropout_backward: `grad` must have "
                "the shape of `x`, got ", g.sizes(), " and ", src.sizes());
    at::Tensor out = at::empty_like(src);
    uint64_t s = seed_value(seed, "relu_dropout_backward");
    uint32_t thr = drop_threshold(p);
    DL_CALL(src.scalar_type(), dl_relu_dropout_grad, in<S>(src), in<S>(g), out_ptr<S>(out),
            src.numel(), s, thr, static_cast<C>(factor), at::get_num_threads());
    return out;
}

/* ---- dispatcher handles (each call goes through every dispatch key again) -------------------- */

const c10::TypedOperatorHandle<at::Tensor(const at::Tensor &, const at::Tensor &, double, double)>
    &dropout_op() {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("dropoutlab::dropout", "")
                         .typed<at::Tensor(const at::Tensor &, const at::Tensor &, double, double)>();
    return op;
}

const c10::TypedOperatorHandle<at::Tensor(const at::Tensor &, const at::Tensor &, double)>
    &gaussian_op() {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("dropoutlab::gaussian", "")
                         .typed<at::Tensor(const at::Tensor &, const at::Tensor &, double)>();
    return op;
}

const c10::TypedOperatorHandle<at::Tensor(const at::Tensor &, const at::Tensor &, double, double)>
    &relu_dropout_op() {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("dropoutlab::relu_dropout", "")
                         .typed<at::Tensor(const at::Tensor &, const at::Tensor &, double, double)>();
    return op;
}

const c10::TypedOperatorHandle<at::Tensor(const at::Tensor &, const at::Tensor &,
                                          const at::Tensor &, double, double)> &
relu_dropout_backward_op() {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("dropoutlab::relu_dropout_backward", "")
                         .typed<at::Tensor(const at::Tensor &, const at::Tensor &,
                                           const at::Tensor &, double, double)>();
    return op;
}

const c10::TypedOperatorHandle<at::Tensor(const at::Tensor &, std::optional<at::Generator>)> &
seed_op() {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("dropoutlab::seed", "")
                         .typed<at::Tensor(const at::Tensor &, std::optional<at::Generator>)>();
    return op;
}

/* ---- autograd ------------------------------------------------------------------------------- */

/* Backward of dropout and gaussian: the same map with the same seed, applied to the gradient
 * (differentiable again, so higher orders work). Saves the 0-dim seed, never a mask. */
struct NoiseBackward : public torch::autograd::Node {
    bool gaussian = false;
    at::Tensor seed;
    double p = 0.0, factor = 1.0, sigma = 0.0;
    at::MemoryFormat format = at::MemoryFormat::Contiguous;

    std::string name() const override {
        return gaussian ? "dropoutlab::GaussianBackward" : "dropoutlab::DropoutBackward";
    }
    void release_variables() override { seed.reset(); }

    variable_list apply(variable_list &&grads) override {
        TORCH_CHECK(seed.defined(), "dropoutlab: trying to backward through the graph a second "
                    "time; specify retain_graph=True on the first backward");
        variable_list result(1);
        if (grads[0].defined()) {
            at::Tensor g = grads[0].contiguous(format);
            result[0] = gaussian ? gaussian_op().call(g, seed, sigma)
                                 : dropout_op().call(g, seed, p, factor);
        }
        return result;
    }
};

/* Backward of relu_dropout: one fused pass (relu_dropout_backward) reading the saved input; with
 * create_graph=True, the same values from differentiable pieces. */
struct ReluDropoutBackward : public torch::autograd::Node {
    torch::autograd::SavedVariable x_;
    at::Tensor seed;
    double p = 0.0, factor = 1.0;
    at::MemoryFormat format = at::MemoryFormat::Contiguous;

    std::string name() const override { return "dropoutlab::ReluDropoutBackward"; }
    void release_variables() override {
        x_.reset_data();
        seed.reset();
    }

    variable_list apply(variable_list &&grads) override {
        TORCH_CHECK(seed.defined(), "dropoutlab: trying to backward through the graph a second "
                    "time; specify retain_graph=True on the first backward");
        variable_list result(1);
        if (!grads[0].defined()) return result;
        at::Tensor x = x_.unpack();
        at::Tensor g = grads[0].contiguous(format);
        if (at::GradMode::is_enabled()) {
            at::Tensor masked = dropout_op().call(g, seed, p, factor);
            result[0] = at::where(x <= 0, at::zeros({}, masked.options()), masked);
        } else {
            result[0] = relu_dropout_backward_op().call(g, x, seed, p, factor);
        }
        return result;
    }
};

template <typename NodeT>
c10::intrusive_ptr<NodeT> make_node(const at::Tensor &x) {
    if (!torch::autograd::compute_requires_grad(x)) return {};
    auto node = c10::make_intrusive<NodeT>();
    node->set_next_edges(torch::autograd::collect_next_edges(x));
    return node;
}

at::Tensor dropout_autograd(const at::Tensor &x, const at::Tensor &seed, double p,
                            double factor) {
    auto node = make_node<NoiseBackward>(x);
    if (node) {
        node->seed = seed;
        node->p = p;
        node->factor = factor;
        node->format = walk_format(x);
    }
    at::Tensor out;
    {
        at::AutoDispatchBelowADInplaceOrView guard;
        out = dropout_op().call(x, seed, p, factor);
    }
    if (node) torch::autograd::set_history(out, node);
    return out;
}

at::Tensor gaussian_autograd(const at::Tensor &x, const at::Tensor &seed, double sigma) {
    auto node = make_node<NoiseBackward>(x);
    if (node) {
        node->gaussian = true;
        node->seed = seed;
        node->sigma = sigma;
        node->format = walk_format(x);
    }
    at::Tensor out;
    {
        at::AutoDispatchBelowADInplaceOrView guard;
        out = gaussian_op().call(x, seed, sigma);
    }
    if (node) torch::autograd::set_history(out, node);
    return out;
}

at::Tensor relu_dropout_autograd(const at::Tensor &x, const at::Tensor &seed, double p,
                                 double factor) {
    auto node = make_node<ReluDropoutBackward>(x);
    if (node) {
        node->x_ = torch::autograd::SavedVariable(x, false);
        node->seed = seed;
        node->p = p;
        node->factor = factor;
        node->format = walk_format(x);
    }
    at::Tensor out;
    {
        at::AutoDispatchBelowADInplaceOrView guard;
        out = relu_dropout_op().call(x, seed, p, factor);
    }
    if (node) torch::autograd::set_history(out, node);
    return out;
}

/* Not differentiable outputs: the int64 seed, and the fused backward (used only without
 * create_graph). */
at::Tensor seed_autograd(const at::Tensor &x, std::optional<at::Generator> generator) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return seed_op().call(x, std::move(generator));
}

at::Tensor relu_dropout_backward_autograd(const at::Tensor &grad, const at::Tensor &x,
                                          const at::Tensor &seed, double p, double factor) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return relu_dropout_backward_op().call(grad, x, seed, p, factor);
}

/* ---- composites: seed draw + op in one call (CompositeImplicitAutograd: each piece is
 * dispatched, differentiated and traced on its own) --------------------------------------- */

at::Tensor draw_dropout(const at::Tensor &x, double p, double factor,
                        std::optional<at::Generator> generator) {
    return dropout_op().call(x, seed_op().call(x, std::move(generator)), p, factor);
}

at::Tensor draw_gaussian(const at::Tensor &x, double sigma,
                         std::optional<at::Generator> generator) {
    return gaussian_op().call(x, seed_op().call(x, std::move(generator)), sigma);
}

at::Tensor draw_relu_dropout(const at::Tensor &x, double p, double factor,
                             std::optional<at::Generator> generator) {
    return relu_dropout_op().call(x, seed_op().call(x, std::move(generator)), p, factor);
}

}  // namespace

TORCH_LIBRARY(dropoutlab, m) {
    m.def("seed(Tensor x, Generator? generator=None) -> Tensor",
          {at::Tag::nondeterministic_seeded});
    m.def("dropout(Tensor x, Tensor seed, float p, float factor) -> Tensor");
    m.def("gaussian(Tensor x, Tensor seed, float sigma) -> Tensor");
    m.def("relu_dropout(Tensor x, Tensor seed, float p, float factor) -> Tensor");
    m.def("relu_dropout_backward(Tensor grad, Tensor x, Tensor seed, float p, float factor) "
          "-> Tensor");
    m.def("draw_dropout(Tensor x, float p, float factor, Generator? generator=None) -> Tensor");
    m.def("draw_gaussian(Tensor x, float sigma, Generator? generator=None) -> Tensor");
    m.def("draw_relu_dropout(Tensor x, float p, float factor, Generator? generator=None) "
          "-> Tensor");
    m.def("abi_version() -> int", []() -> int64_t { return 3; });
}

TORCH_LIBRARY_IMPL(dropoutlab, CompositeImplicitAutograd, m) {
    m.impl("draw_dropout", draw_dropout);
    m.impl("draw_gaussian", draw_gaussian);
    m.impl("draw_relu_dropout", draw_relu_dropout);
}

TORCH_LIBRARY_IMPL(dropoutlab, CPU, m) {
    m.impl("seed", seed_cpu);
    m.impl("dropout", dropout_cpu);
    m.impl("gaussian", gaussian_cpu);
    m.impl("relu_dropout", relu_dropout_cpu);
    m.impl("relu_dropout_backward", relu_dropout_backward_cpu);
}

TORCH_LIBRARY_IMPL(dropoutlab, Autograd, m) {
    m.impl("seed", seed_autograd);
    m.impl("dropout", dropout_autograd);
    m.impl("gaussian", gaussian_autograd);
    m.impl("relu_dropout", relu_dropout_autograd);
    m.impl("relu_dropout_backward", relu_dropout_backward_autograd);
}
