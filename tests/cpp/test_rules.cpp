// Unit tests of the per-element rules (csrc/core/rules/*.h): Rule::make + Rule::update
// over 10 steps against double-precision references written here from the equations
// (torch.optim semantics, docs/algorithms.md §3-5):
//
//   Adam   t += 1; [L2: g += wd p | decoupled: p *= 1 - lr wd]; m = b1 m + (1-b1) g;
//          v = b2 v + (1-b2) g^2; [amsgrad: vmax = max(vmax, v), use vmax];
//          p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)
//   AdamW  Adam with the decoupled decay always on
//   Adamax t += 1; [L2]; m = b1 m + (1-b1) g; u = max(b2 u, |g| + eps); p -= lr/bc1 * m/u
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/rules/adam.h"
#include "core/rules/adamax.h"
#include "harness.h"

using namespace fusedopt;

namespace {

struct Hyper {
  double b1, b2, eps, wd, lr;
};

// Hyperparameter sets: torch defaults, weight decay, and 1-b1 >= 0.5 (the other formula
// of torch.lerp), a large eps (so its placement matters) and a fast b2.
const Hyper kHypers[] = {
    {0.9, 0.999, 1e-8, 0.0, 1e-3},
    {0.9, 0.999, 1e-8, 0.01, 1e-3},
    {0.3, 0.5, 1e-3, 0.1, 0.1},
    {0.5, 0.99, 1e-6, 0.05, 0.02},
};

constexpr int kN = 8;      // elements
constexpr int kSteps = 10;

// Initial params and the gradient of element i at step t (1-based): signs, zeros, a gradient that
// is large early and small later (so AMSGrad's max matters), one that is always zero.
const double kP0[kN] = {0.5, -1.3, 2.0, 0.0, 1e-3, -4.0, 0.75, 3.0};
double grad_at(int i, int t) {
  switch (i) {
    case 0: return 0.1 * std::sin(1.0 + t);
    case 1: return -0.5;
    case 2: return t <= 2 ? 5.0 : 0.01;                  // AMSGrad: v decays, vmax stays
    case 3: return 0.0;                                  // never a gradient
    case 4: return (t % 2) ? 1e-4 : -1e-4;
    case 5: return 2.0 * std::cos(0.7 * t);
    case 6: return t == 5 ? 0.0 : 0.3 * t;
    default: return t <= 3 ? -3.0 : 0.2;
  }
}

// ---- double references ----------------------------------------------------------------
struct AdamRef {
  double p, m = 0, v = 0, vmax = 0;
  void step(double g, int t, const Hyper& h, bool amsgrad, bool decoupled) {
    if (decoupled) {
      p *= 1.0 - h.lr * h.wd;
    } else {
      g += h.wd * p;
    }
    m = h.b1 * m + (1.0 - h.b1) * g;
    v = h.b2 * v + (1.0 - h.b2) * g * g;
    double vv = v;
    if (amsgrad) {
      vmax = std::max(vmax, v);
      vv = vmax;
    }
    const double bc1 = 1.0 - std::pow(h.b1, t), bc2 = 1.0 - std::pow(h.b2, t);
    p -= h.lr / bc1 * m / (std::sqrt(vv) / std::sqrt(bc2) + h.eps);
  }
};

struct AdamaxRef {
  double p, m = 0, u = 0;
  void step(double g, int t, const Hyper& h) {
    g += h.wd * p;
    m = h.b1 * m + (1.0 - h.b1) * g;
    u = std::max(h.b2 * u, std::fabs(g) + h.eps);
    p -= h.lr / (1.0 - std::pow(h.b1, t)) * m / u;
  }
};

// Tolerances: T = double must agree with the reference to rounding; T = float to fp32
// rounding accumulated over 10 steps (relative to the param and to the total update size).
template <class T>
double tol_for(double ref, const Hyper& h) {
  const double rel = sizeof(T) == 8 ? 1e-13 : 2e-6;
  return rel * (std::fabs(ref) + kSteps * h.lr + 1e-30);
}

// Runs `Rule` (variant V, runtime flags rflags) on the kN elements for kSteps steps in T and
// compares params and states with the reference after every step.
template <class Rule, int V, class T, class Ref, class StepRef>
void run_rule_vs_ref(const char* name, const Hyper& h, int rflags, StepRef step_ref, int nstates,
                     int (*state_map)(const Ref&, int, double*)) {
  const double hyper[kMaxHyper] = {h.b1, h.b2, h.eps, h.wd};
  T p[kN], s[kN][kMaxStates] = {};
  std::vector<Ref> ref;
  for (int i = 0; i < kN; ++i) {
    p[i] = T(kP0[i]);
    ref.push_back(Ref{kP0[i]});
  }
  int64_t bad = 0, n = 0;
  double scale[kN][kMaxStates] = {};  // largest |state| so far: states that cross 0 are compared to it
  for (int t = 1; t <= kSteps; ++t) {
    const auto c = Rule::template make<T>(hyper, h.lr, double(t), rflags);
    for (int i = 0; i < kN; ++i) {
      Rule::template update<V>(p[i], T(grad_at(i, t)), s[i], c);
      step_ref(ref[i], grad_at(i, t), t);
      double want[kMaxStates + 1];
      const int k = state_map(ref[i], nstates, want);
      want[k] = ref[i].p;
      T got[kMaxStates + 1];
      for (int j = 0; j < nstates; ++j) got[j] = s[i][j];
      got[k] = p[i];
      for (int j = 0; j <= k; ++j) {
        ++n;
        // states relative to their own size so far (v ~ g^2 can be tiny; m crosses 0)
        double tol;
        if (j == k) {
          tol = tol_for<T>(want[j], h);
        } else {
          scale[i][j] = std::max(scale[i][j], std::fabs(want[j]));
          tol = (sizeof(T) == 8 ? 1e-13 : 2e-6) * (scale[i][j] + 1e-300);
        }
        const double err = std::fabs(double(got[j]) - want[j]);
        if (!(err <= tol)) {
          if (++bad <= 5)
            std::printf("    %s hyper(b1=%g b2=%g eps=%g wd=%g lr=%g) step %d elem %d %s: got %.17g want %.17g\n",
                        name, h.b1, h.b2, h.eps, h.wd, h.lr, t, i, j == k ? "param" : "state", double(got[j]),
                        want[j]);
        }
      }
    }
  }
  CHECK_MSG(bad == 0 && n > 0, "%s (%s): %lld of %lld values off", name, sizeof(T) == 8 ? "double" : "float",
            (long long)bad, (long long)n);
}

int adam_states(const AdamRef& r, int nstates, double* out) {
  out[0] = r.m;
  out[1] = r.v;
  if (nstates == 3) out[2] = r.vmax;
  return nstates;
}
int adamax_states(const AdamaxRef& r, int, double* out) {
  out[0] = r.m;
  out[1] = r.u;
  return 2;
}

template <class T>
void adam_family(const Hyper& h) {
  using rules::Adam;
  using rules::AdamW;
  auto ref = [&h](bool ams, bool dec) {
    return [&h, ams, dec](AdamRef& r, double g, int t) { r.step(g, t, h, ams, dec); };
  };
  run_rule_vs_ref<Adam, 0, T, AdamRef>("adam", h, 0, ref(false, false), 2, adam_states);
  run_rule_vs_ref<Adam, 1, T, AdamRef>("adam amsgrad", h, 0, ref(true, false), 3, adam_states);
  run_rule_vs_ref<Adam, 0, T, AdamRef>("adam decoupled", h, Adam::kDecoupled, ref(false, true), 2, adam_states);
  run_rule_vs_ref<Adam, 1, T, AdamRef>("adam amsgrad decoupled", h, Adam::kDecoupled, ref(true, true), 3,
                                       adam_states);
  // AdamW: decoupled whether or not the flag is passed
  run_rule_vs_ref<AdamW, 0, T, AdamRef>("adamw", h, 0, ref(false, true), 2, adam_states);
  run_rule_vs_ref<AdamW, 0, T, AdamRef>("adamw (flag)", h, Adam::kDecoupled, ref(false, true), 2, adam_states);
  run_rule_vs_ref<AdamW, 1, T, AdamRef>("adamw amsgrad", h, 0, ref(true, true), 3, adam_states);
}

template <class T>
void adamax_rule(const Hyper& h) {
  run_rule_vs_ref<rules::Adamax, 0, T, AdamaxRef>(
      "adamax", h, 0, [&h](AdamaxRef& r, double g, int t) { r.step(g, t, h); }, 2, adamax_states);
}

TEST_CASE(adam_adamw_double_vs_reference) {
  for (const Hyper& h : kHypers) adam_family<double>(h);
}
TEST_CASE(adam_adamw_float_vs_reference) {
  for (const Hyper& h : kHypers) adam_family<float>(h);
}
TEST_CASE(adamax_double_vs_reference) {
  for (const Hyper& h : kHypers) adamax_rule<double>(h);
}
TEST_CASE(adamax_float_vs_reference) {
  for (const Hyper& h : kHypers) adamax_rule<float>(h);
}

// The scenarios above must be able to tell the variants apart, or the comparisons prove little.
TEST_CASE(reference_scenarios_discriminate) {
  const Hyper& h = kHypers[2];
  AdamRef plain{kP0[2]}, ams{kP0[2]}, dec{kP0[2]};
  for (int t = 1; t <= kSteps; ++t) {
    plain.step(grad_at(2, t), t, h, false, false);
    ams.step(grad_at(2, t), t, h, true, false);
    dec.step(grad_at(2, t), t, h, false, true);
  }
  // differences well beyond the fp32 tolerance of the comparisons above
  const double tol = tol_for<float>(plain.p, h);
  CHECK_MSG(std::fabs(plain.p - ams.p) > 20 * tol, "amsgrad moves differently: %.10g vs %.10g", plain.p, ams.p);
  CHECK_MSG(std::fabs(plain.p - dec.p) > 20 * tol, "decoupled decay moves differently: %.10g vs %.10g", plain.p,
            dec.p);
  // eps placement E1 vs E2 (eps/sqrt(bc2)) differs measurably with eps = 1e-3, b2 = 0.5
  AdamRef e2{kP0[0]}, e1{kP0[0]};
  Hyper h2 = h;
  for (int t = 1; t <= kSteps; ++t) {
    e1.step(grad_at(0, t), t, h, false, false);
    h2.eps = h.eps / std::sqrt(1.0 - std::pow(h.b2, t));
    e2.step(grad_at(0, t), t, h2, false, false);
  }
  CHECK_MSG(std::fabs(e1.p - e2.p) > 20 * tol_for<float>(e1.p, h), "E1 vs E2: %.10g vs %.10g", e1.p, e2.p);
}

// Elementwise facts that do not need a reference.
TEST_CASE(rule_edge_cases) {
  using rules::Adam;
  using rules::Adamax;
  const double hyper[kMaxHyper] = {0.9, 0.999, 1e-8, 0.0};
  // a zero gradient from the first step leaves the param where it is (no 0/0)
  {
    auto c = Adam::make<float>(hyper, 0.1, 1.0, 0);
    float p = 1.5f, s[kMaxStates] = {};
    Adam::update<1>(p, 0.0f, s, c);
    CHECK_EQ_BITS(p, 1.5f);
    auto cx = Adamax::make<float>(hyper, 0.1, 1.0, 0);
    float q = 1.5f, sx[kMaxStates] = {};
    Adamax::update<0>(q, 0.0f, sx, cx);
    CHECK_EQ_BITS(q, 1.5f);
    CHECK(sx[1] > 0.0f);  // u = eps, not 0
  }
  // NaN gradients propagate to param and states (torch does not hide them); for AMSGrad the max too
  {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    auto c = Adam::make<float>(hyper, 0.1, 3.0, 0);
    float p = 1.0f, s[kMaxStates] = {0.1f, 0.2f, 0.3f};
    Adam::update<1>(p, nan, s, c);
    CHECK(std::isnan(p) && std::isnan(s[0]) && std::isnan(s[1]) && std::isnan(s[2]));
    auto cx = Adamax::make<float>(hyper, 0.1, 3.0, 0);
    float q = 1.0f, sx[kMaxStates] = {0.1f, 0.2f};
    Adamax::update<0>(q, nan, sx, cx);
    CHECK(std::isnan(q) && std::isnan(sx[0]) && std::isnan(sx[1]));
  }
  // first step of Adam moves by lr in the direction of -sign(g) (bias corrections cancel)
  {
    auto c = Adam::make<double>(hyper, 0.01, 1.0, 0);
    double p = 0.0, s[kMaxStates] = {};
    Adam::update<0>(p, 3.0, s, c);
    CHECK_NEAR(p, -0.01, 1e-10);
  }
  // the decoupled decay is applied before the step and scales by lr * wd
  {
    const double hw[kMaxHyper] = {0.9, 0.999, 1e-8, 0.5};
    auto c = Adam::make<double>(hw, 0.1, 1.0, Adam::kDecoupled);
    double p = 2.0, s[kMaxStates] = {};
    Adam::update<0>(p, 0.0, s, c);
    CHECK_NEAR(p, 2.0 * (1.0 - 0.1 * 0.5), 1e-15);
  }
  CHECK(Adam::num_states(0) == 2 && Adam::num_states(1) == 3 && Adamax::num_states(0) == 2);
}

}  // namespace

int main(int argc, char** argv) { return fo_test::run_all(argc, argv); }
