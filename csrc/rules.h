// The update rules: one small function per optimizer, the math of one element.
//
// Each rule reads line for line like its function in pyoptim/reference.py, which is the
// specification (equations, defaults, torch.optim conventions). The operations and their order
// are those of the reference, so that with floating-point contraction off (see CMakeLists.txt)
// the results are the reference's to the last bit. Per-step scalars arrive precomputed (in
// float64 on the host, by pyoptim/_spec.py) and already cast to the compute type T. The gradient
// arrives multiplied by the scalar grad_factor (-1 for maximize) and clamped if asked: that part
// of the prologue is the same for every rule and lives in the loop (kernels.h, scaled_gradient).
//
// A rule declares:
//   name, state_names        the torch state names, in the order the state buffers are passed
//   flag_names, k<Flag>      options that change which operations run; a step's flags are a
//                            compile-time bit mask F, so an unused option costs nothing
//   reads(F, k), writes(F, k) which state buffers a step with flags F touches
//   Scalars<T>, scalar_names the per-step scalars (PYOPTIM_SCALARS below)
//   update<F>(param, grad, <one reference per state buffer>, s)
//                            (F may also carry kFusedMultiplyAdd, which only quotient<F> reads)
//   The first scalar of every rule is grad_factor, read by the loop (kernels.h).
#pragma once

#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace pyoptim {

// Declares the struct Scalars<T> with one member per name in LIST, the same names as a string
// array (the order in which pyoptim/_spec.py passes the values) and the cast from float64. A
// member is a T, or, written X(name, Divisor), a Divisor<T> (below), which the rule divides by
// with quotient<F>.
#define PYOPTIM_SCALAR_TYPE(name, ...) __VA_OPT__(__VA_ARGS__<) T __VA_OPT__(>)
#define PYOPTIM_SCALAR_MEMBER(...) \
  PYOPTIM_SCALAR_TYPE(__VA_ARGS__) PYOPTIM_SCALAR_FIRST(__VA_ARGS__);
#define PYOPTIM_SCALAR_FIRST(name, ...) name
#define PYOPTIM_SCALAR_NAME(name, ...) #name,
#define PYOPTIM_SCALAR_IS_DIVISOR(name, ...) __VA_OPT__(|| true)
#define PYOPTIM_SCALAR_CAST(...) \
  s.PYOPTIM_SCALAR_FIRST(__VA_ARGS__) = PYOPTIM_SCALAR_TYPE(__VA_ARGS__)(static_cast<T>(*values++));
#define PYOPTIM_SCALARS(LIST)                                                \
  template <class T>                                                         \
  struct Scalars {                                                           \
    LIST(PYOPTIM_SCALAR_MEMBER)                                              \
  };                                                                         \
  static constexpr std::array scalar_names{LIST(PYOPTIM_SCALAR_NAME)};       \
  static constexpr bool has_divisor = false LIST(PYOPTIM_SCALAR_IS_DIVISOR); \
  template <class T>                                                         \
  static Scalars<T> cast_scalars(const double* values) {                     \
    Scalars<T> s;                                                            \
    LIST(PYOPTIM_SCALAR_CAST)                                                \
    return s;                                                                \
  }

// torch.lerp(a, b, w) for a scalar weight w in [0, 1]. torch uses two formulas, each exact at its
// own end: a + w*(b - a) for w < 0.5, else b - (b - a)*(1 - w). The second equals b + (w - 1)*(b - a)
// to the bit (1 - w and w - 1 are exact negatives), so both are base + c*(b - a) with a choice of
// base and c that depends on w alone: no branch on an element, which keeps the loop vectorized.
template <class T>
inline T lerp(T a, T b, T w) {
  const bool small = w < T(0.5);
  const T c = w - T(!small);  // w, or w - 1 (w - 0 is exactly w)
  return (small ? a : b) + c * (b - a);
}

// torch.maximum / np.maximum: NaN in either argument gives NaN. (| rather than || evaluates both
// comparisons, so that GCC if-converts the select.)
template <class T>
inline T maximum(T a, T b) {
  return ((a != a) | (a > b)) ? a : b;
}

// condition ? a : b, chosen on the bits, so that the compiler cannot move the float operations
// that computed a or b into a branch (where, floating-point exceptions being traps to it, it
// would no longer vectorize the loop).
template <class T>
inline T select(bool condition, T a, T b) {
  using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  const U mask = U(0) - static_cast<U>(condition);
  return std::bit_cast<T>((std::bit_cast<U>(a) & mask) | (std::bit_cast<U>(b) & ~mask));
}

// torch.sign: -1, 0 or 1, and 0 for NaN.
template <class T>
inline T sign(T x) {
  return static_cast<T>(x > T(0)) - static_cast<T>(x < T(0));
}

// A bit of the flag mask F that is not an option: the loop (kernels.h) sets it where the code
// runs on a CPU with fused multiply-add instructions, for quotient<F>.
inline constexpr unsigned kFusedMultiplyAdd = 1u << 31;

// A per-step scalar that a rule divides by, with its reciprocal rounded to T (computed once per
// step, on the host, when the scalars are cast).
template <class T>
struct Divisor {
  T value, reciprocal;
  Divisor() = default;
  explicit Divisor(T c) : value(c), reciprocal(static_cast<T>(1.0 / static_cast<double>(c))) {}
};

// x / c, correctly rounded: the bits of the division. In float32 with fused multiply-add it
// takes no division instruction: q = x * (1/c) is corrected once by its remainder r = q*c - x,
// which an FMA computes exactly. x86 CPUs run division and square root on one unit, and it bounds
// Adam's loop in cache (bench/divider): this keeps its square root and its per-element division
// and drops the division by c.
//   Exact (proved by tests/proofs/quotient.cpp, which checks every case the error bound leaves
//   open) for x = +-0, +-inf or NaN, or 2^-100 <= |x| <= 2^64, and 2^-27 <= c <= 1: so for x the
//   square root of any float and c the square root of a bias correction (Adam's 1 - beta2^t is at
//   least 2^-53). An infinite x gives a NaN remainder, hence the test (a masked FMA with AVX-512).
template <unsigned F, class T>
inline T quotient(T x, const Divisor<T>& c) {
  if constexpr (std::is_same_v<T, float> && (F & kFusedMultiplyAdd) != 0) {
    const T q = x * c.reciprocal;
    const T r = std::fma(q, c.value, -x);
    return r == r ? std::fma(-r, c.reciprocal, q) : q;
  } else {
    return x / c.value;
  }
}

// The prologue every rule starts with (reference._gradient). The gradient has been multiplied by
// grad_factor (-1 for maximize; pyoptim's classes fold loss scaling and norm clipping into it) and
// clamped for clip_value by the loop (kernels.h, scaled_gradient); here comes weight decay,
// coupled (L2: g + wd*p) or, with Decoupled, decoupled (p * (1 - lr*wd), as in AdamW).
template <bool WeightDecay, bool Decoupled = false, class T, class S>
inline void gradient_prologue(T& param, T& grad, const S& s) {
  if constexpr (WeightDecay) {
    if constexpr (Decoupled) {
      param = param * s.decay_factor;
    } else {
      grad = grad + s.weight_decay * param;
    }
  }
}

struct Sgd {
  static constexpr const char* name = "sgd";
  static constexpr std::array state_names{"momentum_buffer"};
  static constexpr std::array flag_names{"weight_decay", "momentum", "nesterov", "first_step"};
  enum : unsigned { kWeightDecay = 1u, kMomentum = 2u, kNesterov = 4u, kFirstStep = 8u };
  static constexpr bool reads(unsigned f, int) { return (f & kMomentum) && !(f & kFirstStep); }
  static constexpr bool writes(unsigned f, int) { return f & kMomentum; }

#define PYOPTIM_SGD_SCALARS(X) X(grad_factor) X(weight_decay) X(momentum) X(one_minus_dampening) X(lr)
  PYOPTIM_SCALARS(PYOPTIM_SGD_SCALARS)
#undef PYOPTIM_SGD_SCALARS

  template <unsigned F, class T>
  static void update(T& param, T grad, T& momentum_buffer, const Scalars<T>& s) {
    gradient_prologue<bool(F & kWeightDecay)>(param, grad, s);
    if constexpr (F & kMomentum) {
      if constexpr (F & kFirstStep) {
        momentum_buffer = grad;                                      // b = g on the first step
      } else {
        momentum_buffer = momentum_buffer * s.momentum + s.one_minus_dampening * grad;
      }
      if constexpr (F & kNesterov) {
        grad = grad + s.momentum * momentum_buffer;
      } else {
        grad = momentum_buffer;
      }
    }
    param = param - s.lr * grad;
  }
};

struct Adagrad {
  static constexpr const char* name = "adagrad";
  static constexpr std::array state_names{"sum"};
  static constexpr std::array flag_names{"weight_decay"};
  enum : unsigned { kWeightDecay = 1u };
  static constexpr bool reads(unsigned, int) { return true; }
  static constexpr bool writes(unsigned, int) { return true; }

#define PYOPTIM_ADAGRAD_SCALARS(X) X(grad_factor) X(weight_decay) X(clr) X(eps)
  PYOPTIM_SCALARS(PYOPTIM_ADAGRAD_SCALARS)
#undef PYOPTIM_ADAGRAD_SCALARS

  template <unsigned F, class T>
  static void update(T& param, T grad, T& sum, const Scalars<T>& s) {
    gradient_prologue<bool(F & kWeightDecay)>(param, grad, s);
    sum = sum + grad * grad;
    param = param - s.clr * grad / (std::sqrt(sum) + s.eps);         // clr: lr with lr_decay
  }
};

struct Rmsprop {
  static constexpr const char* name = "rmsprop";
  static constexpr std::array state_names{"square_avg", "momentum_buffer", "grad_avg"};
  static constexpr std::array flag_names{"weight_decay", "centered", "momentum"};
  enum : unsigned { kWeightDecay = 1u, kCentered = 2u, kMomentum = 4u };
  static constexpr bool reads(unsigned f, int k) {
    return k == 0 || (k == 1 && (f & kMomentum)) || (k == 2 && (f & kCentered));
  }
  static constexpr bool writes(unsigned f, int k) { return reads(f, k); }

#define PYOPTIM_RMSPROP_SCALARS(X) \
  X(grad_factor) X(weight_decay) X(alpha) X(one_minus_alpha) X(eps) X(momentum) X(lr)
  PYOPTIM_SCALARS(PYOPTIM_RMSPROP_SCALARS)
#undef PYOPTIM_RMSPROP_SCALARS

  template <unsigned F, class T>
  static void update(T& param, T grad, T& square_avg, T& momentum_buffer, T& grad_avg,
                     const Scalars<T>& s) {
    gradient_prologue<bool(F & kWeightDecay)>(param, grad, s);
    square_avg = square_avg * s.alpha + s.one_minus_alpha * grad * grad;
    T avg;
    if constexpr (F & kCentered) {
      grad_avg = lerp(grad_avg, grad, s.one_minus_alpha);
      avg = std::sqrt(square_avg - grad_avg * grad_avg);
    } else {
      avg = std::sqrt(square_avg);
    }
    avg = avg + s.eps;
    if constexpr (F & kMomentum) {
      momentum_buffer = momentum_buffer * s.momentum + grad / avg;
      param = param - s.lr * momentum_buffer;
    } else {
      param = param - s.lr * grad / avg;
    }
  }
};

// Adam, and AdamW as Adam with decoupled weight decay (as torch.optim does).
struct Adam {
  static constexpr const char* name = "adam";
  static constexpr std::array state_names{"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
  static constexpr std::array flag_names{"weight_decay", "decoupled_weight_decay", "amsgrad"};
  enum : unsigned { kWeightDecay = 1u, kDecoupled = 2u, kAmsgrad = 4u };
  static constexpr bool reads(unsigned f, int k) { return k < 2 || (f & kAmsgrad); }
  static constexpr bool writes(unsigned f, int k) { return reads(f, k); }

#define PYOPTIM_ADAM_SCALARS(X)                                                       \
  X(grad_factor) X(weight_decay) X(decay_factor) X(one_minus_beta1) X(beta2) X(one_minus_beta2) \
  X(step_size) X(bias_correction2_sqrt, Divisor) X(eps)
  PYOPTIM_SCALARS(PYOPTIM_ADAM_SCALARS)
#undef PYOPTIM_ADAM_SCALARS

  template <unsigned F, class T>
  static void update(T& param, T grad, T& exp_avg, T& exp_avg_sq, T& max_exp_avg_sq,
                     const Scalars<T>& s) {
    gradient_prologue<bool(F & kWeightDecay), bool(F & kDecoupled)>(param, grad, s);
    exp_avg = lerp(exp_avg, grad, s.one_minus_beta1);                // first moment
    exp_avg_sq = exp_avg_sq * s.beta2 + s.one_minus_beta2 * grad * grad;  // second moment
    T second_moment = exp_avg_sq;
    if constexpr (F & kAmsgrad) {
      max_exp_avg_sq = maximum(max_exp_avg_sq, exp_avg_sq);
      second_moment = max_exp_avg_sq;
    }
    const T denom = quotient<F>(std::sqrt(second_moment), s.bias_correction2_sqrt) + s.eps;
    param = param - s.step_size * exp_avg / denom;                   // step_size = lr / (1 - beta1^t)
  }
};

struct Adamax {
  static constexpr const char* name = "adamax";
  static constexpr std::array state_names{"exp_avg", "exp_inf"};
  static constexpr std::array flag_names{"weight_decay"};
  enum : unsigned { kWeightDecay = 1u };
  static constexpr bool reads(unsigned, int) { return true; }
  static constexpr bool writes(unsigned, int) { return true; }

#define PYOPTIM_ADAMAX_SCALARS(X) \
  X(grad_factor) X(weight_decay) X(one_minus_beta1) X(beta2) X(eps) X(clr)
  PYOPTIM_SCALARS(PYOPTIM_ADAMAX_SCALARS)
#undef PYOPTIM_ADAMAX_SCALARS

  template <unsigned F, class T>
  static void update(T& param, T grad, T& exp_avg, T& exp_inf, const Scalars<T>& s) {
    gradient_prologue<bool(F & kWeightDecay)>(param, grad, s);
    exp_avg = lerp(exp_avg, grad, s.one_minus_beta1);
    exp_inf = maximum(exp_inf * s.beta2, std::abs(grad) + s.eps);   // infinity norm
    param = param - s.clr * exp_avg / exp_inf;                       // clr = lr / (1 - beta1^t)
  }
};

struct Nadam {
  static constexpr const char* name = "nadam";
  static constexpr std::array state_names{"exp_avg", "exp_avg_sq"};
  static constexpr std::array flag_names{"weight_decay", "decoupled_weight_decay"};
  enum : unsigned { kWeightDecay = 1u, kDecoupled = 2u };
  static constexpr bool reads(unsigned, int) { return true; }
  static constexpr bool writes(unsigned, int) { return true; }

#define PYOPTIM_NADAM_SCALARS(X)                                                            \
  X(grad_factor) X(weight_decay) X(decay_factor) X(one_minus_beta1) X(beta2) X(one_minus_beta2) \
  X(bias_correction2) X(eps) X(grad_coefficient) X(exp_avg_coefficient)
  PYOPTIM_SCALARS(PYOPTIM_NADAM_SCALARS)
#undef PYOPTIM_NADAM_SCALARS

  template <unsigned F, class T>
  static void update(T& param, T grad, T& exp_avg, T& exp_avg_sq, const Scalars<T>& s) {
    gradient_prologue<bool(F & kWeightDecay), bool(F & kDecoupled)>(param, grad, s);
    exp_avg = lerp(exp_avg, grad, s.one_minus_beta1);
    exp_avg_sq = exp_avg_sq * s.beta2 + s.one_minus_beta2 * grad * grad;
    const T denom = std::sqrt(exp_avg_sq / s.bias_correction2) + s.eps;
    // the momentum schedule's coefficients: lr (1 - mu_t) / (1 - P), lr mu_t+1 / (1 - P mu_t+1)
    param = param - s.grad_coefficient * grad / denom;
    param = param - s.exp_avg_coefficient * exp_avg / denom;
  }
};

struct Radam {
  static constexpr const char* name = "radam";
  static constexpr std::array state_names{"exp_avg", "exp_avg_sq"};
  static constexpr std::array flag_names{"weight_decay", "decoupled_weight_decay", "rectify"};
  enum : unsigned { kWeightDecay = 1u, kDecoupled = 2u, kRectify = 4u };
  static constexpr bool reads(unsigned, int) { return true; }
  static constexpr bool writes(unsigned, int) { return true; }

#define PYOPTIM_RADAM_SCALARS(X)                                                            \
  X(grad_factor) X(weight_decay) X(decay_factor) X(one_minus_beta1) X(beta2) X(one_minus_beta2) \
  X(bias_correction1) X(lr) X(bias_correction2_sqrt) X(eps) X(rect)
  PYOPTIM_SCALARS(PYOPTIM_RADAM_SCALARS)
#undef PYOPTIM_RADAM_SCALARS

  template <unsigned F, class T>
  static void update(T& param, T grad, T& exp_avg, T& exp_avg_sq, const Scalars<T>& s) {
    gradient_prologue<bool(F & kWeightDecay), bool(F & kDecoupled)>(param, grad, s);
    exp_avg = lerp(exp_avg, grad, s.one_minus_beta1);
    exp_avg_sq = exp_avg_sq * s.beta2 + s.one_minus_beta2 * grad * grad;
    const T exp_avg_hat = exp_avg / s.bias_correction1;
    if constexpr (F & kRectify) {                                    // rho_t > 5 (host)
      const T adaptive_lr = s.bias_correction2_sqrt / (std::sqrt(exp_avg_sq) + s.eps);
      param = param - exp_avg_hat * s.lr * adaptive_lr * s.rect;
    } else {
      param = param - exp_avg_hat * s.lr;
    }
  }
};

struct Adadelta {
  static constexpr const char* name = "adadelta";
  static constexpr std::array state_names{"square_avg", "acc_delta"};
  static constexpr std::array flag_names{"weight_decay"};
  enum : unsigned { kWeightDecay = 1u };
  static constexpr bool reads(unsigned, int) { return true; }
  static constexpr bool writes(unsigned, int) { return true; }

#define PYOPTIM_ADADELTA_SCALARS(X) X(grad_factor) X(weight_decay) X(rho) X(one_minus_rho) X(eps) X(lr)
  PYOPTIM_SCALARS(PYOPTIM_ADADELTA_SCALARS)
#undef PYOPTIM_ADADELTA_SCALARS

  template <unsigned F, class T>
  static void update(T& param, T grad, T& square_avg, T& acc_delta, const Scalars<T>& s) {
    gradient_prologue<bool(F & kWeightDecay)>(param, grad, s);
    square_avg = square_avg * s.rho + s.one_minus_rho * grad * grad;
    const T delta = std::sqrt(acc_delta + s.eps) / std::sqrt(square_avg + s.eps) * grad;
    acc_delta = acc_delta * s.rho + s.one_minus_rho * delta * delta;
    param = param - s.lr * delta;
  }
};

struct Asgd {
  static constexpr const char* name = "asgd";
  static constexpr std::array state_names{"ax"};
  static constexpr std::array flag_names{"weight_decay", "average"};
  enum : unsigned { kWeightDecay = 1u, kAverage = 2u };
  static constexpr bool reads(unsigned f, int) { return f & kAverage; }  // else ax = p
  static constexpr bool writes(unsigned, int) { return true; }

#define PYOPTIM_ASGD_SCALARS(X) X(grad_factor) X(weight_decay) X(decay_factor) X(eta) X(mu)
  PYOPTIM_SCALARS(PYOPTIM_ASGD_SCALARS)
#undef PYOPTIM_ASGD_SCALARS

  template <unsigned F, class T>
  static void update(T& param, T grad, T& ax, const Scalars<T>& s) {
    gradient_prologue<bool(F & kWeightDecay)>(param, grad, s);
    param = param * s.decay_factor;                                  // 1 - lambd * eta
    param = param - s.eta * grad;
    if constexpr (F & kAverage) {                                    // mu != 1 (host)
      ax = ax + (param - ax) * s.mu;
    } else {
      ax = param;
    }
  }
};

struct Rprop {
  static constexpr const char* name = "rprop";
  static constexpr std::array state_names{"prev", "step_size"};
  static constexpr std::array<const char*, 0> flag_names{};
  static constexpr bool reads(unsigned, int) { return true; }
  static constexpr bool writes(unsigned, int) { return true; }

#define PYOPTIM_RPROP_SCALARS(X) X(grad_factor) X(etaminus) X(etaplus) X(step_size_min) X(step_size_max)
  PYOPTIM_SCALARS(PYOPTIM_RPROP_SCALARS)
#undef PYOPTIM_RPROP_SCALARS

  template <unsigned F, class T>
  static void update(T& param, T grad, T& prev, T& step_size, const Scalars<T>& s) {
    gradient_prologue<false>(param, grad, s);
    const T c = sign(grad * prev);
    const T factor = select(c > T(0), s.etaplus, select(c < T(0), s.etaminus, T(1)));
    step_size = std::min(std::max(step_size * factor, s.step_size_min), s.step_size_max);
    grad = factor == s.etaminus ? T(0) : grad;                       // sign flipped: no step
    param = param - sign(grad) * step_size;
    prev = grad;
  }
};

// Lion (Chen et al. 2023), not in torch.optim: c = b1 m + (1-b1) g; p -= lr (sign(c) + wd p);
// m = b2 m + (1-b2) g.
struct Lion {
  static constexpr const char* name = "lion";
  static constexpr std::array state_names{"exp_avg"};
  static constexpr std::array flag_names{"weight_decay"};
  enum : unsigned { kWeightDecay = 1u };
  static constexpr bool reads(unsigned, int) { return true; }
  static constexpr bool writes(unsigned, int) { return true; }

#define PYOPTIM_LION_SCALARS(X) \
  X(grad_factor) X(beta1) X(one_minus_beta1) X(beta2) X(one_minus_beta2) X(lr) X(weight_decay)
  PYOPTIM_SCALARS(PYOPTIM_LION_SCALARS)
#undef PYOPTIM_LION_SCALARS

  template <unsigned F, class T>
  static void update(T& param, T grad, T& exp_avg, const Scalars<T>& s) {
    gradient_prologue<false>(param, grad, s);
    const T c = s.beta1 * exp_avg + s.one_minus_beta1 * grad;
    if constexpr (F & kWeightDecay) {
      param = param - s.lr * (sign(c) + s.weight_decay * param);
    } else {
      param = param - s.lr * sign(c);
    }
    exp_avg = s.beta2 * exp_avg + s.one_minus_beta2 * grad;
  }
};

// LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning"), as optax.lamb: Adam's
// direction (eps outside the square root, after the bias corrections) plus decoupled weight
// decay, u = m_hat / (sqrt(v_hat) + eps) + wd * p, scaled per param array by the trust ratio
// ||p|| / ||u|| (1 where either norm is 0): p = p - lr * (u * ratio). Two passes
// (kernels.h run_trust_ratio): the ratio needs the norms of the whole array.
struct Lamb {
  static constexpr const char* name = "lamb";
  static constexpr std::array state_names{"exp_avg", "exp_avg_sq"};
  static constexpr std::array flag_names{"weight_decay"};
  enum : unsigned { kWeightDecay = 1u };
  static constexpr bool kTrustRatio = true;
  static constexpr bool reads(unsigned, int) { return true; }
  static constexpr bool writes(unsigned, int) { return true; }

#define PYOPTIM_LAMB_SCALARS(X)                                                                  \
  X(grad_factor) X(weight_decay) X(beta1) X(one_minus_beta1) X(beta2) X(one_minus_beta2)      \
  X(inv_bias_correction1) X(inv_bias_correction2) X(eps) X(lr)
  PYOPTIM_SCALARS(PYOPTIM_LAMB_SCALARS)
#undef PYOPTIM_LAMB_SCALARS

  // pass 1: the moments (optax's update_moment: (1 - b) * g + b * m)
  template <unsigned F, class T>
  static void moments(T grad, T& exp_avg, T& exp_avg_sq, const Scalars<T>& s) {
    exp_avg = s.one_minus_beta1 * grad + s.beta1 * exp_avg;
    exp_avg_sq = s.one_minus_beta2 * (grad * grad) + s.beta2 * exp_avg_sq;
  }

  // the update direction, from the stored moments (both passes); the bias corrections are
  // applied as products with their reciprocals (see reference.lamb): one division per element
  template <unsigned F, class T>
  static T direction(T param, T exp_avg, T exp_avg_sq, const Scalars<T>& s) {
    const T exp_avg_hat = exp_avg * s.inv_bias_correction1;
    const T exp_avg_sq_hat = exp_avg_sq * s.inv_bias_correction2;
    T update = exp_avg_hat / (std::sqrt(exp_avg_sq_hat) + s.eps);
    if constexpr (F & kWeightDecay) update = update + s.weight_decay * param;
    return update;
  }

  // pass 2, with the array's trust ratio
  template <class T>
  static T apply(T param, T update, T ratio, const Scalars<T>& s) {
    return param - s.lr * (update * ratio);
  }
};

}  // namespace pyoptim
