// Per-tensor scalar state ("aux"), for rules whose per-tensor scalars cannot be derived from the
// step alone (NAdam's running product mu_product). A rule opts in with
//   static constexpr bool kHasAux = true;
//   FO_HD static float advance_aux(const double* hyper, double step, float aux);  // once per step
//   template <class T> FO_HD static Ctx<T> make(const double* hyper, double lr, double step, int rflags,
//                                               double aux);  // aux = the advanced value
// The engines advance the aux right after bumping the step (not on a skipped step) and pass the new
// value to make(). The op takes the aux tensors as one more list (table names starting with '@').
#pragma once
#include "config.h"
#include "reduce.h"

namespace fusedopt {

template <class Rule>
concept HasAux = requires { Rule::kHasAux; };

// Rules reading reduced values (core/reduce.h) get them as a RedIn instead of an aux.
template <class Rule, class T>
FO_HD auto make_ctx(const double* h, double lr, double step, int rflags, double aux, const RedIn& r = RedIn{}) {
  if constexpr (ReadsReduced<Rule>) {
    static_assert(!HasAux<Rule>, "a rule reads either an aux scalar state or reduced values, not both");
    (void)aux;
    return Rule::template make<T>(h, lr, step, rflags, r);
  } else if constexpr (HasAux<Rule>) {
    (void)r;
    return Rule::template make<T>(h, lr, step, rflags, aux);
  } else {
    (void)aux;
    (void)r;
    return Rule::template make<T>(h, lr, step, rflags);
  }
}

}  // namespace fusedopt
