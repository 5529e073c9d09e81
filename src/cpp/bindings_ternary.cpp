// pybind11 glue for the ternary family of fastemb._C (registered from bindings.cpp).
// Buffer addresses arrive as Python ints (0 = null); the C++ layer validates sizes and null
// pointers (std::invalid_argument -> ValueError naming the argument). The GIL is released around
// every kernel. Layouts and rules: src/cpp/ternary/ternary.h.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "bindings_common.h"
#include "common/cpu_features.h"
#include "binding_args.h"
#include "ternary/ternary.h"
#include "ternary/ternary_validate.h"

namespace py = pybind11;

namespace fastemb::bindings {


void bind_ternary(py::module_& m) {
  m.def(
      "ternary_quantize_activations",
      [](uintptr_t x, int dtype, int64_t rows, int64_t k, int64_t kp, double eps, uintptr_t xq, uintptr_t x_scale,
         const std::string& isa, int scale_rule) {
        if (dtype < 0 || dtype > 3)
          throw std::invalid_argument("dtype: unknown code " + std::to_string(dtype) + " (0 f32, 1 f64, 2 f16, 3 bf16)");
        ternary::validate_scale_rule(scale_rule);
        const Isa chosen = isa_from_name(isa);
        py::gil_scoped_release release;
        ternary::quantize_activations_isa(chosen, ptr<const void>(x), static_cast<ternary::DType>(dtype), rows, k, kp,
                                          static_cast<float>(eps), ptr<int8_t>(xq), ptr<float>(x_scale),
                                          static_cast<ternary::ScaleRule>(scale_rule));
      },
      py::arg("x"), py::arg("dtype"), py::arg("m"), py::arg("k"), py::arg("kp"), py::arg("eps"), py::arg("xq"),
      py::arg("x_scale"), py::arg("isa") = "", py::arg("scale_rule") = 0,
      "Per-row absmax int8 quantization: x [m, k] (dtype code) -> xq int8 [m, kp] (zero padding), x_scale f32 [m]; "
      "scale_rule 0: s = 127 / amax, 1: s = (1 / amax) * 127 (torch / transformers).");
  m.def(
      "ternary_matmul_int8",
      [](uintptr_t xq, uintptr_t x_scale, int64_t rows, uintptr_t packed, int64_t n, int64_t k, int64_t kp,
         uintptr_t scale, bool per_row, uintptr_t bias, uintptr_t out, uintptr_t acc, const std::string& isa,
         int fmt) {
        ternary::validate_format(fmt);
        ternary::Weights w = make_ternary_weights(packed, n, k, kp, scale, per_row);
        w.format = static_cast<ternary::Format>(fmt);
        const Isa chosen = isa_from_name(isa);
        py::gil_scoped_release release;
        ternary::matmul_int8_isa(chosen, ptr<const int8_t>(xq), ptr<const float>(x_scale), rows, w,
                                 ptr<const float>(bias), ptr<float>(out), ptr<int32_t>(acc));
      },
      py::arg("xq"), py::arg("x_scale"), py::arg("m"), py::arg("packed"), py::arg("n"), py::arg("k"), py::arg("kp"),
      py::arg("scale"), py::arg("per_row"), py::arg("bias"), py::arg("out"), py::arg("acc"), py::arg("isa") = "",
      py::arg("fmt") = 0,
      "Integer path: out f32 [m, n] = float(xq W^T) * (gamma / x_scale) + bias; acc int32 [m, n] optional (0); "
      "fmt 0: i2 packed [n, kp / 4], 1: t5 packed [n, kp / 5] (kp padded to 320).");
  m.def(
      "ternary_matmul_float",
      [](uintptr_t x, int64_t rows, uintptr_t packed, int64_t n, int64_t k, int64_t kp, uintptr_t scale, bool per_row,
         uintptr_t bias, uintptr_t out, const std::string& isa, int fmt) {
        ternary::validate_format(fmt);
        ternary::Weights w = make_ternary_weights(packed, n, k, kp, scale, per_row);
        w.format = static_cast<ternary::Format>(fmt);
        const Isa chosen = isa_from_name(isa);
        py::gil_scoped_release release;
        ternary::matmul_float_isa(chosen, ptr<const float>(x), rows, w, ptr<const float>(bias), ptr<float>(out));
      },
      py::arg("x"), py::arg("m"), py::arg("packed"), py::arg("n"), py::arg("k"), py::arg("kp"), py::arg("scale"),
      py::arg("per_row"), py::arg("bias"), py::arg("out"), py::arg("isa") = "", py::arg("fmt") = 0,
      "Float path: out f32 [m, n] = gamma * (x W^T) + bias with x float32 [m, k].");
  m.def(
      "ternary_t5_to_i2",
      [](uintptr_t src, int64_t n, int64_t k, uintptr_t dst) {
        if (n < 0 || k < 0 || k > ternary::kMaxK) throw std::invalid_argument("n, k: out of range");
        if (n > 0 && k > 0 && (src == 0 || dst == 0)) throw std::invalid_argument("src, dst: null data");
        const int64_t rs5 = ternary::padded_k_t5(k) / 5, rs2 = ternary::padded_k(k) / 4;
        py::gil_scoped_release release;
        for (int64_t j = 0; j < n; ++j)
          ternary::transcode_t5_to_i2_row(ptr<const uint8_t>(src) + j * rs5, k, ptr<uint8_t>(dst) + j * rs2);
      },
      py::arg("src"), py::arg("n"), py::arg("k"), py::arg("dst"),
      "t5 packed [n, padded_k_t5(k) / 5] -> i2 packed [n, padded_k(k) / 4] (same weights).");
  m.def(
      "ternary_kernel_isa", [](const std::string& isa) { return std::string(ternary::kernel_variant_name(isa_from_name(isa))); },
      py::arg("isa") = "",
      "The ternary kernel variant a requested ISA runs (avx512 without VNNI runs avx2; sub-variants: avx2_vnni, "
      "dotprod_i8mm).");
}

}  // namespace fastemb::bindings
