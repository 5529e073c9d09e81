// pybind11 glue for the ternary family of fastemb._C_cuda (registered from bindings.cpp).
// Device addresses arrive as Python ints (0 = null), the stream as the integer value of a
// cudaStream_t. Same argument checks as the CPU module (ternary/ternary_validate.h). The GIL is
// released around the launches. matmul_float takes float32 x only (the CPU path too).
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda_bindings_common.h"
#include "binding_args.h"
#include "ternary/ternary.h"
#include "ternary/ternary_validate.h"
#include "ternary_cuda.cuh"

namespace py = pybind11;

namespace fastemb::bindings {


void bind_ternary_cuda(py::module_& m) {
  m.def(
      "ternary_quantize_activations",
      [](uintptr_t x, int dtype, int64_t rows, int64_t k, int64_t kp, double eps, uintptr_t xq, uintptr_t x_scale,
         uintptr_t stream, int scale_rule) {
        if (dtype < 0 || dtype > 3)
          throw std::invalid_argument("dtype: unknown code " + std::to_string(dtype) + " (0 f32, 1 f64, 2 f16, 3 bf16)");
        ternary::validate_scale_rule(scale_rule);
        py::gil_scoped_release release;
        ternary::cuda::quantize_activations(ptr<const void>(x), static_cast<ternary::DType>(dtype), rows, k, kp,
                                            static_cast<float>(eps), ptr<int8_t>(xq), ptr<float>(x_scale),
                                            as_stream(stream), static_cast<ternary::ScaleRule>(scale_rule));
      },
      py::arg("x"), py::arg("dtype"), py::arg("m"), py::arg("k"), py::arg("kp"), py::arg("eps"), py::arg("xq"),
      py::arg("x_scale"), py::arg("stream") = 0, py::arg("scale_rule") = 0);
  m.def(
      "ternary_matmul_int8",
      [](uintptr_t xq, uintptr_t x_scale, int64_t rows, uintptr_t packed, int64_t n, int64_t k, int64_t kp,
         uintptr_t scale, bool per_row, uintptr_t bias, uintptr_t out, uintptr_t acc, uintptr_t stream) {
        const ternary::Weights w = make_ternary_weights(packed, n, k, kp, scale, per_row);
        py::gil_scoped_release release;
        ternary::cuda::matmul_int8(ptr<const int8_t>(xq), ptr<const float>(x_scale), rows, w, ptr<const float>(bias),
                                   ptr<float>(out), ptr<int32_t>(acc), as_stream(stream));
      },
      py::arg("xq"), py::arg("x_scale"), py::arg("m"), py::arg("packed"), py::arg("n"), py::arg("k"), py::arg("kp"),
      py::arg("scale"), py::arg("per_row"), py::arg("bias"), py::arg("out"), py::arg("acc"), py::arg("stream") = 0);
  m.def(
      "ternary_matmul_float",
      [](uintptr_t x, int64_t rows, uintptr_t packed, int64_t n, int64_t k, int64_t kp, uintptr_t scale, bool per_row,
         uintptr_t bias, uintptr_t out, uintptr_t stream) {
        const ternary::Weights w = make_ternary_weights(packed, n, k, kp, scale, per_row);
        py::gil_scoped_release release;
        ternary::cuda::matmul_float(ptr<const float>(x), rows, w, ptr<const float>(bias), ptr<float>(out),
                                    as_stream(stream));
      },
      py::arg("x"), py::arg("m"), py::arg("packed"), py::arg("n"), py::arg("k"), py::arg("kp"), py::arg("scale"),
      py::arg("per_row"), py::arg("bias"), py::arg("out"), py::arg("stream") = 0);
  m.attr("ternary_dp4a_max_rows") = ternary::cuda::kDp4aMaxRows;
}

}  // namespace fastemb::bindings
