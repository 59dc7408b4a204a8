// Optional rule hooks on the roles of its state lists, honoured by both engines.
//
//   static constexpr unsigned read_only_states(int variant);
//       bit k set: update() never changes s[k], so the engines load it but do not store it back
//       (PNM's negative-momentum buffer: one list fewer to write per step).
//   template <class T> FO_HD static bool swap01(const Ctx<T>& c);
//       per tensor and step: exchange the lists of slots 0 and 1 before the element loop, so a rule
//       whose buffers trade roles (PNM: the parity of the step says which buffer is the positive
//       momentum) always updates s[0] and reads s[1]. Decided from the ctx, so on CUDA it is computed
//       on the device from the device step counter (capturable, no host sync).
// A rule with neither hook stores every state and never swaps.
#pragma once
#include "config.h"

namespace fusedopt {

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
