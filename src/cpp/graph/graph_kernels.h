// The graph kernels, written once and compiled per ISA (see CMakeLists.txt). To be written.
#pragma once
#ifndef FASTEMB_ISA_NS
#error "define FASTEMB_ISA_NS before including this header"
#endif
