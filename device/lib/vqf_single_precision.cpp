// VQF's own implementation (vqf/cpp/vqf.cpp of the pinned vqf package's sdist, unmodified),
// compiled in float32. VQF_SINGLE_PRECISION must be set in every unit that includes vqf.hpp, so it
// is set here and in vqf_bridge.cpp rather than left to build flags a user could forget.
#define VQF_SINGLE_PRECISION
#ifndef NDEBUG
#define NDEBUG  // VQF's asserts would pull the C library's assert (and printf) into the firmware
#endif
#include "vqf/vqf.cpp"
