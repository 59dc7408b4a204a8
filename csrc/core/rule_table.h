// The one table of per-element rules: X(op_name, RuleStruct). Each line generates the op schema
// torch.ops.fusedopt.<op_name>_, its CPU and CUDA kernels and the dispatch entries; everything else
// about the rule (state names and signs, hyperparameters and defaults, flags, variant fields) is
// stated once in its header (core/rule_facts.h) and exported by torch.ops.fusedopt.rule_specs().
// Adding a rule = a header in rules/ + a line here.
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
#include "rules/ademamix.h"
#include "rules/schedulefree.h"

#define FO_ELEMENTWISE_RULES(X)        \
  X(adam, Adam)                        \
  X(adamw, AdamW)                      \
  X(adamax, Adamax)                    \
  X(radam, RAdam)                      \
  X(nadam, NAdam)                      \
  X(sgd, SGD)                          \
  X(rmsprop, RMSprop)                  \
  X(adagrad, Adagrad)                  \
  X(adadelta, Adadelta)                \
  X(adabelief, AdaBelief)              \
  X(acprop, ACProp)                    \
  X(diffgrad, DiffGrad)                \
  X(padam, Padam)                      \
  X(signsgd, SignSGD)                  \
  X(pnm, Pnm)                          \
  X(adapnm, AdaPnm)                    \
  X(adan, Adan)                        \
  X(lion, Lion)                        \
  X(lookahead, LookaheadSync)          \
  X(iterate_avg, IterateAverage)       \
  X(lamb1, Lamb1)                      \
  X(lamb2, Lamb2)                      \
  X(lars, Lars)                        \
  X(koala_predict, KoalaPredict)       \
  X(koala_norms, KoalaNorms)           \
  X(koala, Koala)                      \
  X(ademamix, AdEMAMix)                \
  X(schedulefree_adamw, ScheduleFreeAdamW)

namespace fusedopt {

// Rules are numbered by their place in the table; kernels are looked up by that number.
enum RuleId : int {
#define FO_RULE_ID(op, Rule) kRule_##op,
  FO_ELEMENTWISE_RULES(FO_RULE_ID)
#undef FO_RULE_ID
  kNumRules
};

inline constexpr const char* kRuleOps[kNumRules] = {
#define FO_RULE_OP(op, Rule) #op,
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
