// Provenance: the build facts are the ones this binary was built with, the driver version
// is read from /proc/driver/nvidia/version's text.
#include "trainer/provenance.h"

#include <gtest/gtest.h>
#include <torch/version.h>
#include <unistd.h>

#include "common/version.h"

namespace hylab::trainer {
namespace {

TEST(Provenance, DriverVersionFromTheProcText) {
  EXPECT_EQ(parse_nvidia_driver_version("NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.86.15 "
                                        " Thu Jan 16 04:06:06 UTC 2025\n"
                                        "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"),
            "570.86.15");
  EXPECT_EQ(
      parse_nvidia_driver_version(
          "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build\n"),
      "580.95.05");
  EXPECT_EQ(parse_nvidia_driver_version("GCC version: 12.2.0\n"), "");  // no NVRM line
  EXPECT_EQ(parse_nvidia_driver_version(""), "");
}

TEST(Provenance, CollectsEveryKeyOnCpu) {
  const auto p = collect_provenance(c10::Device("cpu"));
  const std::vector<std::string> keys = {"hylab_version", "hylab_commit", "torch_version",
                                         "cuda_version",  "nccl_version", "driver_version",
                                         "gpu_name",      "host"};
  std::vector<std::string> got;
  for (auto it = p.begin(); it != p.end(); ++it) got.push_back(it.key());
  EXPECT_EQ(got, keys);
  EXPECT_EQ(p["hylab_commit"], hylab_commit());
  EXPECT_FALSE(std::string(hylab_commit()).empty());
  EXPECT_EQ(p["torch_version"], TORCH_VERSION);
  EXPECT_EQ(p["gpu_name"], "cpu");
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  EXPECT_EQ(p["host"], host);
  EXPECT_NE(version_text().find(std::string("commit ") + hylab_commit()), std::string::npos);
}

}  // namespace
}  // namespace hylab::trainer
