// Problem descriptions built from the raw arguments the Python layer passes (buffer addresses as
// integers, enum codes as ints). Shared by the CPU (_C) and CUDA (_C_cuda) bindings, so both
// modules check the codes the same way. Plain C++: no Python or CUDA headers.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#include "binary/binary.h"
#include "centroid/centroid.h"
#include "graph/graph.h"
#include "multivector/multivector.h"
#include "ternary/ternary.h"

namespace fastemb::bindings {

template <class T>
inline T* ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

inline centroid::Problem make_centroid_problem(uintptr_t x, int dtype, int64_t n, int64_t d, uintptr_t labels,
                                               bool labels_int32, uintptr_t offsets, int64_t k, uintptr_t weights,
                                               int reduce, int normalize, double eps, bool leave_one_out) {
  if (dtype < 0 || dtype > 3) throw std::invalid_argument("x: unknown dtype code " + std::to_string(dtype));
  if (reduce < 0 || reduce > 3) throw std::invalid_argument("reduce: unknown code " + std::to_string(reduce));
  if (normalize < 0 || normalize > 3) throw std::invalid_argument("normalize: unknown flags " + std::to_string(normalize));
  centroid::Problem p;
  p.x = ptr<const void>(x);
  p.dtype = static_cast<centroid::DType>(dtype);
  p.n = n;
  p.d = d;
  p.labels = ptr<const void>(labels);
  p.labels_int32 = labels_int32;
  p.offsets = ptr<const int64_t>(offsets);
  p.k = k;
  p.weights = ptr<const void>(weights);
  p.reduce = static_cast<centroid::Reduce>(reduce);
  p.normalize = normalize;
  p.eps = eps;
  p.leave_one_out = leave_one_out;
  return p;
}

inline centroid::ForwardOutputs make_centroid_outputs(uintptr_t out, uintptr_t counts, uintptr_t wsum, uintptr_t arg,
                                                      uintptr_t out_norm) {
  centroid::ForwardOutputs o;
  o.out = ptr<void>(out);
  o.counts = ptr<int64_t>(counts);
  o.wsum = ptr<void>(wsum);
  o.arg = ptr<int64_t>(arg);
  o.out_norm = ptr<void>(out_norm);
  return o;
}

// The forward's saved outputs, read by the backward.
inline centroid::BackwardInputs make_centroid_saved(uintptr_t grad_out, uintptr_t out, uintptr_t counts,
                                                    uintptr_t wsum, uintptr_t arg, uintptr_t out_norm) {
  centroid::BackwardInputs in;
  in.grad_out = ptr<const void>(grad_out);
  in.out = ptr<const void>(out);
  in.counts = ptr<const int64_t>(counts);
  in.wsum = ptr<const void>(wsum);
  in.arg = ptr<const int64_t>(arg);
  in.out_norm = ptr<const void>(out_norm);
  return in;
}

inline centroid::BackwardOutputs make_centroid_grads(uintptr_t grad_x, uintptr_t grad_w) {
  centroid::BackwardOutputs o;
  o.grad_x = ptr<void>(grad_x);
  o.grad_w = ptr<void>(grad_w);
  return o;
}

// binarize: x [n, m] (row stride ld) of dtype code (0 float32, 1 float64, 2 float16, 3 bfloat16); scale: 0 or
// float64 with scale_stride 0 (one scalar) or 1 ([n]); gt: the "gt" threshold rule.
inline binary::BinarizeProblem make_binarize_problem(uintptr_t x, int dtype, int64_t n, int64_t m, int64_t ld, int bits,
                                                     uintptr_t scale, int64_t scale_stride, bool gt) {
  binary::BinarizeProblem p;
  p.x = ptr<const void>(x);
  p.dtype = dtype;
  p.n = n;
  p.m = m;
  p.ld = ld;
  p.bits = bits;
  p.scale = ptr<const double>(scale);
  p.scale_stride = scale_stride;
  p.gt = gt;
  return p;
}

// Token sets: set s is rows [begin[s], end[s]) of x float32 [rows, dim].
inline multivector::TokenSets make_token_sets(uintptr_t x, int64_t rows, int64_t dim, uintptr_t begin, uintptr_t end,
                                              int64_t n) {
  multivector::TokenSets t;
  t.x = ptr<const float>(x);
  t.rows = rows;
  t.dim = dim;
  t.begin = ptr<const int64_t>(begin);
  t.end = ptr<const int64_t>(end);
  t.n = n;
  return t;
}

// q/d: uint8 [n, bits, nbytes] C-contiguous; mode 0 = hamming, 1 = sdc.
inline binary::Problem make_binary_problem(uintptr_t q, int64_t nq, uintptr_t d, int64_t nd, int bits, int64_t nbytes,
                                           int64_t dim, int mode) {
  if (mode != 0 && mode != 1) throw std::invalid_argument("mode: unknown code " + std::to_string(mode));
  binary::Problem p;
  p.q = ptr<const uint8_t>(q);
  p.nq = nq;
  p.d = ptr<const uint8_t>(d);
  p.nd = nd;
  p.bits = bits;
  p.nbytes = nbytes;
  p.dim = dim;
  p.mode = static_cast<binary::Mode>(mode);
  return p;
}

// ---- ternary: packed weights (I2 layout) and their scale(s)
inline ternary::Weights make_ternary_weights(uintptr_t packed, int64_t n, int64_t k, int64_t kp, uintptr_t scale,
                                             bool per_row) {
  ternary::Weights w;
  w.packed = ptr<const uint8_t>(packed);
  w.n = n;
  w.k = k;
  w.kp = kp;
  w.scale = ptr<const float>(scale);
  w.per_row = per_row;
  return w;
}

// ---- graph: the random matrix's parameters and a CSR matrix
inline graph::RandomSpec make_random_spec(uint64_t seed, uint64_t threshold, double value, int64_t d) {
  graph::RandomSpec r;
  r.seed = seed;
  r.threshold = threshold;
  r.value = static_cast<float>(value);
  r.d = d;
  return r;
}

inline graph::Csr make_csr(uintptr_t indptr, uintptr_t indices, bool indices_int32, uintptr_t data, int64_t rows,
                           int64_t cols) {
  graph::Csr c;
  c.indptr = ptr<const int64_t>(indptr);
  c.indices = ptr<const void>(indices);
  c.indices_int32 = indices_int32;
  c.data = ptr<const float>(data);
  c.rows = rows;
  c.cols = cols;
  return c;
}

}  // namespace fastemb::bindings
