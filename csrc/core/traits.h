// Optional traits a rule may declare beyond the per-element update (core/rules/*.h).
//
//   static constexpr bool kReadsGrad = false;
//     The rule never reads a gradient (Lookahead's slow-weight sync, iterate averaging): the op
//     schema has no `grads` list, the engines load no grad (update() receives g = 0) and the op
//     refuses grad_scale. The engines keep the step counter, found_inf gate and storage policies.
//
//   static constexpr bool kWritesParam = false;
//     update() never changes the param (iterate averaging reads it): the engines do not store it.
//
//   template <class T> FO_HD static bool skip(const Ctx<T>& c);
//     True when this step leaves every element of the tensor as it is (a Lookahead step that does
//     not sync): the engines then touch no element of it (CPU: no work item; CUDA: each block
//     returns after building its ctx). The step counter (and aux) still advance.
//
//   static constexpr unsigned read_only_states(int variant);
//     Bit k set: update() never changes s[k], so the engines load it but do not store it back
//     (PNM's negative-momentum buffer: one list fewer to write per step).
//
//   template <class T> FO_HD static bool swap01(const Ctx<T>& c);
//     Per tensor and step: exchange the lists of slots 0 and 1 before the element loop, so a rule
//     whose buffers trade roles (PNM: the parity of the step says which buffer is the positive
//     momentum) always updates s[0] and reads s[1]. Decided from the ctx, so on CUDA it is computed
//     on the device from the device step counter (capturable, no host sync).
#pragma once
#include "config.h"

namespace fusedopt {

template <class Rule>
constexpr bool reads_grad() {
  if constexpr (requires { Rule::kReadsGrad; }) {
    return Rule::kReadsGrad;
  } else {
    return true;
  }
}

template <class Rule>
constexpr bool writes_param() {
  if constexpr (requires { Rule::kWritesParam; }) {
    return Rule::kWritesParam;
  } else {
    return true;
  }
}

template <class Rule, class Ctx>
concept HasSkip = requires(const Ctx& c) { Rule::skip(c); };

template <class Rule, class Ctx>
FO_HD bool skips(const Ctx& c) {
  if constexpr (requires { Rule::skip(c); }) {
    return Rule::skip(c);
  } else {
    (void)c;
    return false;
  }
}

template <class Rule>
concept HasReadOnlyStates = requires { Rule::read_only_states(0); };

template <class Rule>
constexpr unsigned read_only_states(int variant) {
  if constexpr (HasReadOnlyStates<Rule>) {
    return Rule::read_only_states(variant);
  } else {
    return 0u;
  }
}

template <class Rule, class Ctx>
FO_HD bool swap01(const Ctx& c) {
  if constexpr (requires { Rule::swap01(c); }) {
    return Rule::swap01(c);
  } else {
    (void)c;
    return false;
  }
}

}  // namespace fusedopt
