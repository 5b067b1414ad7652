// Builds the precompiled header the torch test suites share (tests/CMakeLists.txt,
// test_torch_pch). Not a test: it only has to compile and link like one (gtest_main's main).
#include <gtest/gtest.h>
#include <torch/torch.h>
