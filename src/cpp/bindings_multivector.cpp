// pybind11 glue for the multi-vector family of fastemb._C (registered from bindings.cpp). Buffers are
// addresses (Python ints); the Python layer (fastemb/multivector.py) checks dtypes, shapes and
// contiguity, the C++ layer checks the set bounds and values again (std::invalid_argument -> ValueError).
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "binding_args.h"
#include "bindings_common.h"
#include "multivector/multivector.h"

namespace py = pybind11;

namespace fastemb::bindings {

void bind_multivector(py::module_& m) {
  m.def(
      "multivector_maxsim",
      [](uintptr_t q, int64_t q_rows, uintptr_t q_begin, uintptr_t q_end, int64_t nq, uintptr_t d, int64_t d_rows,
         uintptr_t d_begin, uintptr_t d_end, int64_t nd, int64_t dim, uintptr_t out, const std::string& isa) {
        const Isa i = isa_from_name(isa);
        const multivector::TokenSets qs = make_token_sets(q, q_rows, dim, q_begin, q_end, nq);
        const multivector::TokenSets ds = make_token_sets(d, d_rows, dim, d_begin, d_end, nd);
        py::gil_scoped_release release;
        multivector::maxsim_isa(i, qs, ds, ptr<float>(out));
      },
      py::arg("q"), py::arg("q_rows"), py::arg("q_begin"), py::arg("q_end"), py::arg("nq"), py::arg("d"),
      py::arg("d_rows"), py::arg("d_begin"), py::arg("d_end"), py::arg("nd"), py::arg("dim"), py::arg("out"),
      py::arg("isa") = "",
      "out [nq, nd] float32 = MaxSim of query set i (rows [q_begin[i], q_end[i]) of q) and document set j.");
  m.def(
      "multivector_maxsim_topk",
      [](uintptr_t q, int64_t q_rows, uintptr_t q_begin, uintptr_t q_end, int64_t nq, uintptr_t d, int64_t d_rows,
         uintptr_t d_begin, uintptr_t d_end, int64_t nd, int64_t dim, int64_t k, uintptr_t scores, uintptr_t ids,
         const std::string& isa) {
        const Isa i = isa_from_name(isa);
        const multivector::TokenSets qs = make_token_sets(q, q_rows, dim, q_begin, q_end, nq);
        const multivector::TokenSets ds = make_token_sets(d, d_rows, dim, d_begin, d_end, nd);
        py::gil_scoped_release release;
        multivector::maxsim_topk_isa(i, qs, ds, k, ptr<float>(scores), ptr<int64_t>(ids));
      },
      py::arg("q"), py::arg("q_rows"), py::arg("q_begin"), py::arg("q_end"), py::arg("nq"), py::arg("d"),
      py::arg("d_rows"), py::arg("d_begin"), py::arg("d_end"), py::arg("nd"), py::arg("dim"), py::arg("k"),
      py::arg("scores"), py::arg("ids"), py::arg("isa") = "",
      "The k best document sets per query set by MaxSim: scores [nq, k] float32, ids [nq, k] int64.");
  m.def(
      "multivector_fde",
      [](uintptr_t x, int64_t rows, uintptr_t begin, uintptr_t end, int64_t n, int64_t dim, int64_t repetitions,
         int k_sim, int64_t d_proj, int64_t final_dim, bool document, bool fill_empty, uint64_t seed, uintptr_t out,
         const std::string& isa) {
        const Isa i = isa_from_name(isa);
        const multivector::TokenSets xs = make_token_sets(x, rows, dim, begin, end, n);
        multivector::FdeSpec s;
        s.repetitions = repetitions;
        s.k_sim = k_sim;
        s.d_proj = d_proj;
        s.final_dim = final_dim;
        s.document = document;
        s.fill_empty = fill_empty;
        s.seed = seed;
        py::gil_scoped_release release;
        multivector::muvera_fde_isa(i, s, xs, ptr<float>(out));
      },
      py::arg("x"), py::arg("rows"), py::arg("begin"), py::arg("end"), py::arg("n"), py::arg("dim"),
      py::arg("repetitions"), py::arg("k_sim"), py::arg("d_proj"), py::arg("final_dim"), py::arg("document"),
      py::arg("fill_empty"), py::arg("seed"), py::arg("out"), py::arg("isa") = "",
      "MUVERA fixed-dimensional encodings: out [n, fde_dim] float32 (multivector.h).");
}

}  // namespace fastemb::bindings
