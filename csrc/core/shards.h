// Rule kernels are compiled in FO_NUM_SHARDS translation units per CPU ISA and for CUDA, so a build
// runs them in parallel and no unit grows with the rule table: rule number r (core/rule_table.h)
// lands in shard r % FO_NUM_SHARDS. The build (CMakeLists.txt) reads FO_NUM_SHARDS from this line
// and generates one source per shard; adding a rule needs no change here.
#pragma once

#define FO_NUM_SHARDS 13
#define FO_SHARD_LIST(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12)

// Defines, in the current namespace, fill_shard_<FO_SHARD>(Kernel* table): puts the kernel of every rule
// of shard FO_SHARD into table[rule number]. The includer has in scope `Kernel` (a pointer to
// void(const Launch&)) and its engine's `template <class Rule> void dispatch(const Launch&, const char*)`.
#define FO_SHARD_FILL_NAME_(s) fill_shard_##s
#define FO_SHARD_FILL_NAME(s) FO_SHARD_FILL_NAME_(s)
#define FO_SHARD_FILL_ONE(op, Rule) \
  if constexpr (kRule_##op % FO_NUM_SHARDS == FO_SHARD) table[kRule_##op] = &shard_kernel<kRule_##op, rules::Rule>;
#define FO_DEFINE_SHARD_FILL()                          \
  template <int R, class Rule>                          \
  void shard_kernel(const Launch& L) {                  \
    dispatch<Rule>(L, kRuleOps[R]);                     \
  }                                                     \
  void FO_SHARD_FILL_NAME(FO_SHARD)(Kernel * table) {   \
    FO_ELEMENTWISE_RULES(FO_SHARD_FILL_ONE)             \
  }
