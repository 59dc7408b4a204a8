// What a rule states about itself besides its math: one declaration per fact, in its header
// (core/rules/*.h), read by the torch glue (csrc/torch/ops.cpp: the op schema and its checks;
// csrc/torch/info.cpp: torch.ops.fusedopt.rule_specs(), from which the Python layer builds the
// packing of its optimizers, fusedopt.functional and the fake kernels). torch-free.
//
//   static constexpr const char* kStates = "exp_avg, +exp_avg_sq, +max_exp_avg_sq";
//       The op's state lists, in order: element states first, then per-tensor scalar states.
//       '+name'       a non-negative element state (second moments, sums): the unsigned 8-bit map;
//                     an unmarked element state may be negative: the signed map (core/q8.h).
//       'name=param'  an element state that starts as a copy of the param (default: zeros).
//       '@name=v'     a per-tensor float32 scalar state starting at v (core/aux.h; at most one).
//   static constexpr HyperDecl kHyper[] = {{"beta1", 0.9}, {"beta2", 0.999}, ...};
//       The op's `hyper` list, in order, with the defaults of fusedopt.functional; make() reads h[i]
//       in this order. Names are the functional's argument names.
//   static constexpr double kLr = 1e-3;                        (optional) fusedopt.functional's lr
//   static constexpr FlagDecl kFlags[] = {{"nesterov", false}};   (optional) rule flag bit i (config.h:
//       bits 8.. of the op's `flags`), named as the optimizer argument that sets it, with its default.
//   static constexpr FieldDecl kVariant[] = {{"amsgrad", 1}};     (optional) the variant index as bit
//       fields, low bits first: name, width, the names of its values ("torch|official"; null: a bool or
//       a number), default. A field named as a hyperparameter is set when that hyperparameter is non-zero
//       (SGD's momentum buffer exists when momentum != 0).
//   kNumVariants stays explicit: it may be less than 2^(field bits) (Padam: 6 of 8).
#pragma once
#include <cstddef>

#include "config.h"

namespace fusedopt {

struct HyperDecl {
  const char* name;
  double value;  // default
};

struct FlagDecl {
  const char* name;
  bool value;  // default
};

struct FieldDecl {
  const char* name;
  int bits;
  const char* values = nullptr;  // "a|b|c": value k is named by the k-th name; null: bool (1 bit) or number
  int value = 0;                 // default
};

namespace facts {

template <class T, std::size_t N>
constexpr int count(const T (&)[N]) {
  return int(N);
}

template <class R>
constexpr int num_hyper() {
  return count(R::kHyper);
}

template <class R>
constexpr double default_lr() {
  if constexpr (requires { R::kLr; }) return R::kLr; else return 1e-3;
}

template <class R>
constexpr int num_flags() {
  if constexpr (requires { R::kFlags; }) return count(R::kFlags); else return 0;
}
template <class R>
constexpr const FlagDecl* flags() {
  if constexpr (requires { R::kFlags; }) return R::kFlags; else return nullptr;
}

template <class R>
constexpr int num_fields() {
  if constexpr (requires { R::kVariant; }) return count(R::kVariant); else return 0;
}
template <class R>
constexpr const FieldDecl* fields() {
  if constexpr (requires { R::kVariant; }) return R::kVariant; else return nullptr;
}
template <class R>
constexpr int variant_bits() {
  int b = 0;
  for (int i = 0; i < num_fields<R>(); ++i) b += fields<R>()[i].bits;
  return b;
}

// Which named state lists variant v uses (bit k = list k). A rule whose variants use a subset that is not
// a prefix (RMSprop: square_avg + grad_avg without momentum_buffer) declares
// `static constexpr unsigned slot_mask(int variant)`; the glue packs the used lists, in order, into the
// engine's state slots 0..num_states-1. Without it a variant uses the first num_states lists.
template <class R>
constexpr unsigned slot_mask(int v) {
  if constexpr (requires { R::slot_mask(0); }) return R::slot_mask(v);
  else return (1u << R::num_states(v)) - 1u;
}

// Names in kStates: element states (optionally '+'), then '@' scalar states.
constexpr int count_states(const char* s, bool scalar) {
  int n = 0;
  bool start = true;
  for (const char* c = s; *c; ++c) {
    if (*c == ',') {
      start = true;
    } else if (*c != ' ' && start) {
      start = false;
      if ((*c == '@') == scalar) ++n;
    }
  }
  return n;
}

// The compile-time checks of a rule's facts against its code (used by the glue for every rule).
template <class R>
constexpr bool consistent() {
  constexpr int ne = count_states(R::kStates, false), ns = count_states(R::kStates, true);
  static_assert(ne <= kMaxStates, "more element states than the op ABI's slots");
  static_assert(ns <= 1, "at most one per-tensor scalar state (core/aux.h)");
  static_assert(num_hyper<R>() <= kMaxHyper, "more hyperparameters than Launch::hyper holds");
  static_assert(num_flags<R>() <= 8, "rule flags are 8 bits of the op's flags (config.h)");
  static_assert(variant_bits<R>() <= 8, "the variant index is 8 bits of the op's flags (config.h)");
  static_assert(R::kNumVariants <= (1 << variant_bits<R>()), "kNumVariants needs variant fields (kVariant) of enough bits");
  for (int v = 0; v < R::kNumVariants; ++v)
    if (R::num_states(v) > ne) return false;
  return true;
}

}  // namespace facts
}  // namespace fusedopt
