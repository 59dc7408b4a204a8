// The CPU implementation of Adafactor's passes (core/adafactor.h), compiled once per ISA inside
// kernels_impl.h after reduce_impl.h (it calls the reduction engine of the same ISA). torch-free.
// Per-tensor scalars are computed on the host between the passes (CPU memory is host memory).
//
// Work items of the element passes: blocks of row_block(C) whole rows of a factored tensor (the
// row factor is then a per-row scalar, the col factors a contiguous vector), kChunk elements of an
// unfactored one. Pass 2's per-item sums of u^2 and of p^2 (for RMS(p): there is no separate pass
// over the params) go to kLanes fp64 lanes folded by a fixed tree and are added per tensor in item
// order: results do not depend on the thread count.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "../core/adafactor.h"
#include "../core/numeric.h"
#include "../core/reduce.h"
#include "../core/storage.h"

namespace fusedopt::cpu::FO_ISA {

struct AfItem {
  int64_t t, begin, end;  // elements [begin, end) of tensor t (factored: whole rows)
};

// Per-tensor values the element passes read (host-computed): the row/col factors and the scalars.
template <class T>
struct AfTensorCtx {
  const T* rfac;   // factored: per row (af_row_factor)
  const T* cfac;   // factored: per col (af_col_factor)
  const T* rden;   // torch factored: per row max(mean R of its matrix, eps1)
  AfElemCtx<T> e;
};

// Pass 2 (kApply = false: sum of u^2 into `part`, sum of p^2 into `psq`) or pass 3 (kApply) over one
// item.
template <bool kTorch, bool kApply, bool kBeta1, class T, class PP, class SP>
void af_item(const AfTensor& at, const AfTensorCtx<T>& c, const AfItem& it, T gsign, double* part, double* psq) {
  const PP pp = make_plain<PP>(at.param);
  const PP gp = make_plain<PP>(at.grad);
  const SP vs = make_plain<SP>(at.row_or_var);
  const SP ms = make_plain<SP>(kBeta1 ? at.exp_avg : at.row_or_var);
  double acc[kLanes], pacc[kLanes];
  for (int j = 0; j < kLanes; ++j) acc[j] = pacc[j] = 0.0;
  // pass 2: p^2 of elements [i, i + kLanes) into the lanes (pass 3 needs RMS(p) of the old p)
  auto psq_lanes = [&](int64_t i) {
    prefetch_lanes(pp, i);
    prefetch_lanes(gp, i);
    double v[kLanes];
    for (int l = 0; l < kLanes; ++l) v[l] = double(pp.load(i + l));
    for (int l = 0; l < kLanes; ++l) pacc[l] += v[l] * v[l];
  };
  auto psq_tail = [&](int64_t i, int l) {
    const double x = double(pp.load(i));
    pacc[l] += x * x;
  };
  auto finish = [&](int64_t i, T u) {
    if constexpr (kApply) {
      T m = kBeta1 ? ms.load(i) : T(0);
      pp.store(i, af_apply<kTorch, kBeta1>(pp.load(i), u, &m, c.e));
      if constexpr (kBeta1) ms.store(i, m);
    }
  };
  if (at.factored) {
    const int64_t C = at.cols;
    for (int64_t r = it.begin / C, re = it.end / C; r < re; ++r) {
      const T rf = c.rfac[r];
      const T rd = kTorch ? c.rden[r] : T(1);
      const int64_t b = r / at.rows;
      const T* cf = c.cfac + b * C;
      const int64_t base = r * C;
      if constexpr (kApply) {
#pragma GCC ivdep
        for (int64_t j = 0; j < C; ++j) {
          const T g = gp.load(base + j) * gsign;
          finish(base + j, af_factored_u<kTorch>(g, rf, cf[j], rd, c.e.floor));
        }
      } else {
        int64_t j = 0;
        for (; j + kLanes <= C; j += kLanes) {
          double v[kLanes];
          for (int l = 0; l < kLanes; ++l) {
            const T u = af_factored_u<kTorch>(gp.load(base + j + l), rf, cf[j + l], rd, c.e.floor);
            v[l] = double(u) * double(u);
          }
          for (int l = 0; l < kLanes; ++l) acc[l] += v[l];
          psq_lanes(base + j);
        }
        for (int l = 0; j < C; ++j, ++l) {
          const T u = af_factored_u<kTorch>(gp.load(base + j), rf, cf[j], rd, c.e.floor);
          acc[l] += double(u) * double(u);
          psq_tail(base + j, l);
        }
      }
    }
  } else {
    auto unf = [&](int64_t i, T g) {
      T v;
      if constexpr (kApply) {
        v = vs.load(i);  // pass 2 stored the new V
      } else {
        v = af_var_update<kTorch>(vs.load(i), g, c.e);
        vs.store(i, v);
      }
      return af_var_u<kTorch>(v, g, c.e);
    };
    if constexpr (kApply) {
#pragma GCC ivdep
      for (int64_t i = it.begin; i < it.end; ++i) {
        const T g = gp.load(i) * gsign;
        finish(i, unf(i, g));
      }
    } else {
      int64_t i = it.begin;
      for (; i + kLanes <= it.end; i += kLanes) {
        double v[kLanes];
        for (int l = 0; l < kLanes; ++l) {
          const T u = unf(i + l, gp.load(i + l));
          v[l] = double(u) * double(u);
        }
        for (int l = 0; l < kLanes; ++l) acc[l] += v[l];
        psq_lanes(i);
      }
      for (int l = 0; i < it.end; ++i, ++l) {
        const T u = unf(i, gp.load(i));
        acc[l] += double(u) * double(u);
        psq_tail(i, l);
      }
    }
  }
  if constexpr (!kApply) {
    for (int w = kLanes / 2; w > 0; w /= 2)
      for (int j = 0; j < w; ++j) {
        acc[j] += acc[j + w];
        pacc[j] += pacc[j + w];
      }
    *part = acc[0];
    *psq = pacc[0];
  } else {
    (void)part;
    (void)psq;
  }
}

// AMP: the grads of tensors [t0, t0 + n) divided by *grad_scale in place (core/adafactor.h), in kChunk
// pieces over the threads; done per group, so the later passes read them from the cache.
template <class T, class PP>
void af_unscale(const AfArgs& a, int64_t t0, int64_t n) {
  std::vector<AfItem> items;
  int64_t total = 0;
  for (int64_t t = t0; t < t0 + n; ++t) {
    total += a.tensors[t].numel;
    for (int64_t b = 0; b < a.tensors[t].numel; b += kChunk)
      items.push_back({t, b, b + kChunk < a.tensors[t].numel ? b + kChunk : a.tensors[t].numel});
  }
  const T scale = T(*a.grad_scale);
  const int64_t nitems = int64_t(items.size());
  const int nthreads = total < 32768 ? 1 : (a.nthreads > 0 ? a.nthreads : 1);
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
  for (int64_t i = 0; i < nitems; ++i) {
    const PP gp = make_plain<PP>(a.tensors[items[i].t].grad);
    const int64_t b = items[i].begin, e = items[i].end;
    for (int64_t j = b; j < e; ++j) gp.store(j, gp.load(j) / scale);
  }
}

// Passes 0-3 over tensors [t0, t0 + n) of the call.
template <bool kTorch, class T, class PP, class SP>
void af_run_group(const AfArgs& a, int64_t t0, int64_t n) {
  const AfTensor* tensors = a.tensors + t0;
  const bool torch_sem = kTorch;
  const T gsign = (a.flags & kAfMaximize) ? T(-1) : T(1);
  if (a.grad_scale != nullptr) af_unscale<T, PP>(a, t0, n);

  // steps, and the per-tensor scalars that depend on the step only (the EMA weights: passes 1-2);
  // alpha and the decay need RMS(p), summed by pass 2 and set after it
  std::vector<double> steps(n);
  std::vector<AfScalars> sc(n);
  for (int64_t t = 0; t < n; ++t) {
    steps[t] = double(*tensors[t].step += 1.0f);
    sc[t] = af_scalars(a, steps[t], 0.0);
  }

  // pass 1: row/col means of U of the factored grads, the R/C EMAs and the per-row/col factors
  std::vector<AfTensorCtx<T>> ctx(n);
  std::vector<std::vector<T>> fac(n);
  std::vector<float> rm, cm;
  std::vector<double> ws;
  for (int64_t t = 0; t < n; ++t) {
    const AfTensor& at = tensors[t];
    AfTensorCtx<T>& c = ctx[t];
    c.e = af_elem_ctx<kTorch, T>(a, sc[t]);
    if (!at.factored || at.numel == 0) continue;
    const int64_t B = at.batch, R = at.rows, C = at.cols;
    rm.resize(size_t(B * R));
    cm.resize(size_t(B * C));
    ws.resize(size_t(rowcol_workspace(B, R, C) > 0 ? rowcol_workspace(B, R, C) : 1));
    RowColArgs rc{};
    rc.data = at.grad;
    rc.batch = B;
    rc.rows = R;
    rc.cols = C;
    rc.dt = a.dt;
    rc.square = true;
    rc.mean = true;
    rc.add = torch_sem ? 0.0 : a.eps1;
    rc.row_out = rm.data();
    rc.col_out = cm.data();
    rc.workspace = ws.data();
    rc.nthreads = a.nthreads;
    rowcol_dispatch(rc);
    const SP rs = make_plain<SP>(at.row_or_var), cs = make_plain<SP>(at.col);
    for (int64_t i = 0; i < B * R; ++i) rs.store(i, af_ema<kTorch>(rs.load(i), T(rm[i]), c.e));
    for (int64_t i = 0; i < B * C; ++i) cs.store(i, af_ema<kTorch>(cs.load(i), T(cm[i]), c.e));
    std::vector<T>& f = fac[t];
    f.resize(size_t(B * R * (torch_sem ? 2 : 1) + B * C));
    T* rf = f.data();
    T* cf = rf + B * R;
    T* rd = cf + B * C;
    for (int64_t b = 0; b < B; ++b) {
      double s = 0.0;
      for (int64_t i = 0; i < R; ++i) s += double(rs.load(b * R + i));
      const T mean = T(s / double(R));
      for (int64_t i = 0; i < R; ++i) rf[b * R + i] = af_row_factor<kTorch>(rs.load(b * R + i), mean);
      if (torch_sem)
        for (int64_t i = 0; i < R; ++i) rd[b * R + i] = af_row_den(mean, a.eps1);
    }
    for (int64_t j = 0; j < B * C; ++j) cf[j] = af_col_factor<kTorch>(cs.load(j));
    c.rfac = rf;
    c.cfac = cf;
    c.rden = torch_sem ? rd : nullptr;
  }

  // work items
  std::vector<AfItem> items;
  std::vector<int64_t> first(n + 1);
  int64_t total = 0;
  for (int64_t t = 0; t < n; ++t) {
    const AfTensor& at = tensors[t];
    first[t] = int64_t(items.size());
    total += at.numel;
    if (at.numel == 0) continue;
    const int64_t step = at.factored ? row_block(at.cols) * at.cols : kChunk;
    for (int64_t b = 0; b < at.numel; b += step) items.push_back({t, b, b + step < at.numel ? b + step : at.numel});
  }
  first[n] = int64_t(items.size());
  const int64_t nitems = int64_t(items.size());
  const int nthreads = total < 32768 ? 1 : (a.nthreads > 0 ? a.nthreads : 1);
  const bool beta1 = !torch_sem && (a.flags & kAfBeta1);

  // pass 2: u and the sums of u^2 and p^2 per item. Each thread takes the items pass 3 gives it
  // (schedule(static)'s contiguous blocks), in reverse: what it read last in pass 1 (grads) is read
  // first here, and what it reads last here is what pass 3 starts with, so more of a group that
  // does not fit in the cache is read from it than in same-direction sweeps. The sums are kept per
  // item and folded in item order: the order the items run in changes no result.
  std::vector<double> part(size_t(nitems > 0 ? nitems : 1)), ppart(size_t(nitems > 0 ? nitems : 1));
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
  {
    int64_t lo, hi;
#ifdef _OPENMP
    static_block(nitems, omp_get_num_threads(), omp_get_thread_num(), &lo, &hi);
#else
    static_block(nitems, 1, 0, &lo, &hi);  // a build without OpenMP threads
#endif
    for (int64_t i = hi - 1; i >= lo; --i) {
      const AfItem& it = items[i];
      af_item<kTorch, false, false, T, PP, SP>(tensors[it.t], ctx[it.t], it, gsign, &part[i], &ppart[i]);
    }
  }
  for (int64_t t = 0; t < n; ++t) {
    const AfTensor& at = tensors[t];
    double s = 0.0, psq = 0.0;
    for (int64_t k = first[t]; k < first[t + 1]; ++k) {
      s += part[k];
      psq += ppart[k];
    }
    // transformers: norm / sqrt(numel) in fp32 (0/0 = nan for an empty tensor)
    const double rms = std::sqrt(psq) / std::sqrt(double(at.numel));
    *at.rms = float(rms);
    // the reference computes RMS in the param's compute dtype: fp32, or fp64 for fp64 params
    sc[t] = af_scalars(a, steps[t], sizeof(T) == 8 ? rms : double(float(rms)));
    ctx[t].e = af_elem_ctx<kTorch, T>(a, sc[t]);
    af_set_clip<kTorch>(ctx[t].e, sc[t], af_clipdiv(s, at.numel, a.clip));
  }

  // pass 3: apply
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
  for (int64_t i = 0; i < nitems; ++i) {
    const AfItem& it = items[i];
    if (beta1)
      af_item<kTorch, true, true, T, PP, SP>(tensors[it.t], ctx[it.t], it, gsign, nullptr, nullptr);
    else
      af_item<kTorch, true, false, T, PP, SP>(tensors[it.t], ctx[it.t], it, gsign, nullptr, nullptr);
  }
}

// Tensors are taken in groups of about kAfGroupBytes of params + grads, each group through all
// three passes before the next: a group's params and grads are then read again from the cache
// (passes 1-3 read the grad three times) instead of from memory. A larger tensor is a group alone.
// 4 MiB: on a 2-core EPYC (32 MiB L3 shared with other tenants) groups of 2-6 MiB were about 1 ms
// faster per GPT-2-small step than 20 MiB ones (bench/results/cpu-2026-12-05-adafactor-passes.md).
constexpr int64_t kAfGroupBytes = int64_t(4) << 20;

template <bool kTorch, class T, class PP, class SP>
void af_run(const AfArgs& a) {
  const int64_t n = a.ntensors;
  if (n == 0) return;
  if (a.found_inf && *a.found_inf != 0.0f) return;
  const int64_t esize = a.dt == Dt::F64 ? 8 : (a.dt == Dt::F32 ? 4 : 2);
  int64_t t0 = 0;
  while (t0 < n) {
    int64_t t1 = t0 + 1, bytes = a.tensors[t0].numel * 2 * esize;
    while (t1 < n && bytes + a.tensors[t1].numel * 2 * esize <= kAfGroupBytes) bytes += a.tensors[t1++].numel * 2 * esize;
    af_run_group<kTorch, T, PP, SP>(a, t0, t1 - t0);
    t0 = t1;
  }
}

template <class T, class PP, class SP>
void af_sem(const AfArgs& a) {
  if (a.flags & kAfTorch) return af_run<true, T, PP, SP>(a);
  return af_run<false, T, PP, SP>(a);
}

inline void adafactor_dispatch(const AfArgs& a) {
  switch (a.dt) {
    case Dt::F32: return af_sem<float, F32Store<float>, F32Store<float>>(a);
    case Dt::F64: return af_sem<double, F64Store<double>, F64Store<double>>(a);
    case Dt::F16: return af_sem<float, F16Store<float>, F32Store<float>>(a);
    case Dt::BF16: return af_sem<float, BF16Store<float>, F32Store<float>>(a);
    default: return;
  }
}

}  // namespace fusedopt::cpu::FO_ISA
