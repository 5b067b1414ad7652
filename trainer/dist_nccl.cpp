// NCCL data-parallel for CUDA ranks (trainer/dist.h). Built only with a CUDA LibTorch and
// NCCL (HYLAB_HAS_NCCL). Rank 0 creates the unique id and publishes it in the c10d store;
// collectives run on the current CUDA stream, so they are ordered with the surrounding
// torch ops without extra synchronisation.
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>

#include "common/check.h"
#include "trainer/dist.h"
#include "trainer/dist_store.h"

#define HYLAB_NCCL_CHECK(cmd)                                                                \
  do {                                                                                       \
    const ncclResult_t r_ = (cmd);                                                           \
    if (r_ != ncclSuccess) {                                                                 \
      HYLAB_FAIL("{}:{}: NCCL error {} ({}) in {}; NCCL_DEBUG=WARN shows more", __FILE__,    \
                 __LINE__, static_cast<int>(r_), ncclGetErrorString(r_), #cmd);              \
    }                                                                                        \
  } while (0)

#define HYLAB_CUDA_CHECK(cmd)                                                               \
  do {                                                                                      \
    const cudaError_t e_ = (cmd);                                                           \
    if (e_ != cudaSuccess) {                                                                \
      HYLAB_FAIL("{}:{}: CUDA error {} in {}", __FILE__, __LINE__, cudaGetErrorString(e_), \
                 #cmd);                                                                     \
    }                                                                                       \
  } while (0)

namespace hylab::trainer {
namespace {

ncclDataType_t nccl_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return ncclFloat32;
    case at::kBFloat16: return ncclBfloat16;
    case at::kHalf: return ncclFloat16;
    case at::kDouble: return ncclFloat64;
    case at::kLong: return ncclInt64;
    case at::kInt: return ncclInt32;
    default: HYLAB_FAIL("NCCL: unsupported tensor dtype {}", c10::toString(t));
  }
}

class NcclDist : public Dist {
 public:
  NcclDist(DistEnv env, const torch::Device& device) : Dist(std::move(env)), device_(device) {
    HYLAB_CUDA_CHECK(cudaSetDevice(device_.index()));
    auto store = make_store(env_);
    wait_for_all_ranks(*store, env_, "hylab/init");
    ncclUniqueId id;
    const std::string key = "hylab/nccl_unique_id";
    if (env_.rank == 0) {
      HYLAB_NCCL_CHECK(ncclGetUniqueId(&id));
      const auto* p = reinterpret_cast<const uint8_t*>(&id);
      store->set(key, std::vector<uint8_t>(p, p + sizeof(id)));
    } else {
      store->wait({key});
      const std::vector<uint8_t> bytes = store->get(key);
      HYLAB_CHECK(bytes.size() == sizeof(id), "NCCL unique id of {} bytes, expected {}",
                  bytes.size(), sizeof(id));
      std::memcpy(&id, bytes.data(), sizeof(id));
    }
    HYLAB_NCCL_CHECK(ncclCommInitRank(&comm_, env_.world, id, env_.rank));
  }
  ~NcclDist() override {
    if (comm_) ncclCommDestroy(comm_);
  }
  std::string backend() const override { return "nccl"; }

  void average_gradients(const std::vector<torch::Tensor>& params) override {
    const double world = env_.world;
    for_each_gradient_bucket(params, 64ll << 20, [&](torch::Tensor& flat) {
      all_reduce_sum(flat);
      flat.div_(world);
    });
  }
  void all_reduce_sum(torch::Tensor& t) override {
    HYLAB_CHECK(t.is_cuda() && t.is_contiguous(), "NCCL all-reduce needs a contiguous CUDA tensor");
    HYLAB_NCCL_CHECK(ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                                   nccl_type(t.scalar_type()), ncclSum, comm_, stream()));
  }
  void broadcast(torch::Tensor& t, int root) override {
    HYLAB_CHECK(t.is_cuda() && t.is_contiguous(), "NCCL broadcast needs a contiguous CUDA tensor");
    HYLAB_NCCL_CHECK(ncclBroadcast(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                                   nccl_type(t.scalar_type()), root, comm_, stream()));
  }
  void barrier() override {
    torch::Tensor one = torch::ones({1}, torch::dtype(torch::kFloat).device(device_));
    all_reduce_sum(one);
    HYLAB_CUDA_CHECK(cudaStreamSynchronize(stream()));
  }

 private:
  cudaStream_t stream() const { return c10::cuda::getCurrentCUDAStream(device_.index()).stream(); }
  torch::Device device_;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

std::unique_ptr<Dist> make_nccl_dist(const DistEnv& env, const torch::Device& device) {
  return std::make_unique<NcclDist>(env, device);
}

}  // namespace hylab::trainer
