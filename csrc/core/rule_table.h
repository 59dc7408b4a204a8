// The one table of per-element rules. X(op_name, RuleStruct, "state names"); a name marked '@'
// is a per-tensor scalar state (core/aux.h), listed after the element states. A name marked '+'
// is a non-negative state (second moments, sums): stored 8-bit it uses the unsigned dynamic map;
// unmarked element states may be negative and use the signed map (core/q8.h).
// generates: the op schema torch.ops.fusedopt.<op_name>_, its CPU and CUDA
// kernels, and the dispatch entries. Adding a rule = a header in rules/ + a line here.
#pragma once
#include "rules/adam.h"
#include "rules/adamax.h"
#include "rules/nadam.h"
#include "rules/radam.h"
#include "rules/sgd.h"
#include "rules/rmsprop.h"
#include "rules/adagrad.h"
#include "rules/adadelta.h"
#include "rules/adabelief.h"
#include "rules/acprop.h"
#include "rules/diffgrad.h"
#include "rules/padam.h"
#include "rules/signsgd.h"
#include "rules/adan.h"
#include "rules/lion.h"
#include "rules/pnm.h"
#include "rules/lookahead.h"
#include "rules/averaging.h"
#include "rules/lamb.h"
#include "rules/lars.h"
#include "rules/koala.h"

#define FO_ELEMENTWISE_RULES(X)                                  \
  X(adam, Adam, "exp_avg, +exp_avg_sq, +max_exp_avg_sq")          \
  X(adamw, AdamW, "exp_avg, +exp_avg_sq, +max_exp_avg_sq")        \
  X(adamax, Adamax, "exp_avg, +exp_inf")                         \
  X(radam, RAdam, "exp_avg, +exp_avg_sq")                        \
  X(nadam, NAdam, "exp_avg, +exp_avg_sq, @mu_product")           \
  X(sgd, SGD, "momentum_buffer")                                \
  X(rmsprop, RMSprop, "+square_avg, momentum_buffer, grad_avg")  \
  X(adagrad, Adagrad, "+sum")                                    \
  X(adadelta, Adadelta, "+square_avg, +acc_delta")               \
  X(adabelief, AdaBelief, "exp_avg, +exp_avg_var, +max_exp_avg_var") \
  X(acprop, ACProp, "exp_avg, +exp_avg_var, +max_exp_avg_var")       \
  X(diffgrad, DiffGrad, "exp_avg, +exp_avg_sq, previous_grad")     \
  X(padam, Padam, "exp_avg, +exp_avg_sq, +max_exp_avg_sq")          \
  X(signsgd, SignSGD, "exp_avg, +exp_avg_sq")                    \
  X(pnm, Pnm, "pos_momentum, neg_momentum")                     \
  X(adapnm, AdaPnm, "exp_avg, neg_exp_avg, +exp_avg_sq, +max_exp_avg_sq") \
  X(adan, Adan, "exp_avg, +exp_avg_sq, exp_avg_diff, neg_pre_grad") \
  X(lion, Lion, "exp_avg")                                      \
  X(lookahead, LookaheadSync, "slow_param, momentum_buffer, slow_momentum") \
  X(iterate_avg, IterateAverage, "param_avg, @n_averaged")     \
  X(lamb1, Lamb1, "exp_avg, +exp_avg_sq")                        \
  X(lamb2, Lamb2, "exp_avg, +exp_avg_sq")                        \
  X(lars, Lars, "momentum_buffer")                              \
  X(koala_predict, KoalaPredict, "velocity, param_ema")          \
  X(koala_norms, KoalaNorms, "")                                \
  X(koala, Koala, "velocity, param_ema")

namespace fusedopt {

// Rules are numbered by their place in the table; kernels are looked up by that number.
enum RuleId : int {
#define FO_RULE_ID(op, Rule, states) kRule_##op,
  FO_ELEMENTWISE_RULES(FO_RULE_ID)
#undef FO_RULE_ID
  kNumRules
};

inline constexpr const char* kRuleOps[kNumRules] = {
#define FO_RULE_OP(op, Rule, states) #op,
    FO_ELEMENTWISE_RULES(FO_RULE_OP)
#undef FO_RULE_OP
};

// Number of the rule whose op is `op`, or -1. A string search: for registration and tests, never per call.
inline int rule_index(const char* op) {
  if (op == nullptr) return -1;
  for (int r = 0; r < kNumRules; ++r) {
    const char* a = kRuleOps[r];
    const char* b = op;
    while (*a && *a == *b) ++a, ++b;
    if (*a == 0 && *b == 0) return r;
  }
  return -1;
}

}  // namespace fusedopt
