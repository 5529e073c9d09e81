// Memory helpers shared by the kernel families.
#pragma once
#include <cstddef>

namespace fastemb {

// Asks the kernel to back a large, freshly allocated output buffer with transparent huge pages
// before it is first written. A fresh N x D gradient (512 MB at 1M x 128 fp32) otherwise costs
// one page fault per 4 KB on first touch, which dominated the backward (spec: 198 ms vs 22 ms).
// Only advice: ignored where THP is off, for small buffers, and off Linux.
void advise_huge_pages(void* data, size_t bytes);

}  // namespace fastemb
