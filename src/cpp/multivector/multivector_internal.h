// Shared between the multi-vector dispatcher and its per-ISA kernels (not part of the public C++ API).
#pragma once
#include <cstdint>

#include "multivector/multivector.h"

namespace fastemb::multivector {

// The MaxSim work split: query sets cut into blocks (qblocks [nqb + 1] set boundaries), document sets
// into chunks (dchunks [ndc + 1]). Depends on the shapes only; the split never changes a bit of the
// result (every score is computed whole by one task).
struct BlockPlan {
  const int64_t* qblocks = nullptr;
  int64_t nqb = 0;
  const int64_t* dchunks = nullptr;
  int64_t ndc = 0;
};

// The count-sketch tables of a MUVERA call (multivector_math.h rules), built once by the dispatcher.
struct FdeTables {
  // Inner sketch, per repetition r and column o: inner_len entries (j << 1) | negative at
  // inner_entries[(r * d_proj + o) * inner_len ...], the coordinates j of column o in increasing order,
  // then padding entries j = dim (a zero row; adding +0 changes no sum that starts at +0). Null without
  // inner projection.
  const int32_t* inner_entries = nullptr;
  int64_t inner_len = 0;
  // Final sketch: [raw FDE length] (column << 1) | negative. Null without final projection.
  const int32_t* final_tab = nullptr;
};

#define FASTEMB_MULTIVECTOR_DECLARE_ISA(ns)                                                                 \
  namespace ns {                                                                                            \
  void maxsim(const TokenSets& q, const TokenSets& d, const BlockPlan& bp, float* out);                     \
  void maxsim_topk(const TokenSets& q, const TokenSets& d, const BlockPlan& bp, int64_t stripes, int64_t k, \
                   float* cand_s, int64_t* cand_id);                                                        \
  void muvera_fde(const FdeSpec& s, const TokenSets& x, const int64_t* chunks, int64_t nchunks,             \
                  const FdeTables& tb, float* out);                                                         \
  }
FASTEMB_MULTIVECTOR_DECLARE_ISA(serial)
#if defined(FASTEMB_X86)
FASTEMB_MULTIVECTOR_DECLARE_ISA(avx2)
FASTEMB_MULTIVECTOR_DECLARE_ISA(avx512)
#endif
#if defined(FASTEMB_ARM64)
FASTEMB_MULTIVECTOR_DECLARE_ISA(neon)
#endif
#undef FASTEMB_MULTIVECTOR_DECLARE_ISA

}  // namespace fastemb::multivector
