// Rule kernels are compiled in kNumShards translation units per CPU ISA and for CUDA, so a build
// runs them in parallel and no unit grows with the rule table: rule number r (core/rule_table.h)
// lands in shard r % FO_NUM_SHARDS. The build (CMakeLists.txt) reads FO_NUM_SHARDS from this line
// and generates one source per shard; adding a rule needs no change here.
#pragma once

#define FO_NUM_SHARDS 8
#define FO_SHARD_LIST(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
