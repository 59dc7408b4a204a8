// Link and lookup test of the CUDA engine (built only when fusedopt_cuda is). Needs no GPU:
// it proves the static library links into a plain C++ program (every symbol resolved) and that
// every op of the rule table has a CUDA kernel. Numerical tests of the CUDA engine need a device
// and torch (tests/test_cuda.py).
#include <cstring>

#include "core/rule_table.h"
#include "cuda/api.h"
#include "harness.h"

namespace {

TEST_CASE(every_rule_has_a_cuda_kernel) {
#define FO_CHECK_OP(op, Rule) \
  CHECK_MSG(fusedopt::cuda::kernel(#op) != nullptr, "no CUDA kernel for %s", #op);
  FO_ELEMENTWISE_RULES(FO_CHECK_OP)
#undef FO_CHECK_OP
  CHECK(fusedopt::cuda::kernel("no_such_rule") == nullptr);
  CHECK(fusedopt::cuda::kernel("") == nullptr);
  CHECK(fusedopt::cuda::kernel(nullptr) == nullptr);
}

}  // namespace

int main(int argc, char** argv) { return fo_test::run_all(argc, argv); }
