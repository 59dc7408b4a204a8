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
FO_HD bool skips(const Ctx& c) {
  if constexpr (requires { Rule::skip(c); }) {
    return Rule::skip(c);
  } else {
    (void)c;
    return false;
  }
}

}  // namespace fusedopt
