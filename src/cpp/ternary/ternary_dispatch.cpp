// Validation, work splitting and run-time ISA dispatch for the ternary kernels. To be written.
#include "ternary/ternary.h"
