// Builds the precompiled header the torch test suites share (tests/CMakeLists.txt,
// test_torch_pch). Not a test: it only has to compile and link like one.
#include <gtest/gtest.h>
#include <torch/torch.h>

TEST(TorchPch, LinksLikeATest) { EXPECT_EQ(torch::ones({2}).sum().item<float>(), 2.f); }
