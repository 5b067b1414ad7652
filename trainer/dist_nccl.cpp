// NCCL data-parallel for CUDA ranks (trainer/dist.h). Built only with a CUDA LibTorch and
// NCCL (HYLAB_HAS_NCCL). Rank 0 creates the unique id and publishes it in the c10d store;
// blocking collectives run on the current CUDA stream, so they are ordered with the
// surrounding torch ops without extra synchronisation. all_reduce_sum_async runs on a
// communication stream of its own (so a bucket's all-reduce overlaps the rest of backward):
// it waits for an event recorded on the current stream, and wait() makes the then-current
// stream wait for the all-reduce's completion event (the host never blocks). The bucket stays
// alive in the caller until after wait(), so the caching allocator cannot hand its memory to
// another kernel while NCCL still reads or writes it.
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

// Completion of one all_reduce_sum_async: an event recorded on the communication stream.
class NcclWork : public CommWork {
 public:
  NcclWork(cudaEvent_t done, int device) : done_(done), device_(device) {}
  ~NcclWork() override {
    if (done_) cudaEventDestroy(done_);
  }
  void wait() override {
    const cudaStream_t s = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_)).stream();
    HYLAB_CUDA_CHECK(cudaStreamWaitEvent(s, done_, 0));
  }

 private:
  cudaEvent_t done_ = nullptr;
  int device_;
};

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
    HYLAB_CUDA_CHECK(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking));
  }
  ~NcclDist() override {
    if (comm_) ncclCommDestroy(comm_);
    if (comm_stream_) cudaStreamDestroy(comm_stream_);
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
  std::unique_ptr<CommWork> all_reduce_sum_async(torch::Tensor& t) override {
    HYLAB_CHECK(t.is_cuda() && t.is_contiguous(), "NCCL all-reduce needs a contiguous CUDA tensor");
    // The communication stream starts once the work queued so far (the bucket's copy) is done.
    cudaEvent_t ready = nullptr, done = nullptr;
    HYLAB_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    HYLAB_CUDA_CHECK(cudaEventRecord(ready, stream()));
    HYLAB_CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, ready, 0));
    cudaEventDestroy(ready);  // released once recorded work completes
    HYLAB_NCCL_CHECK(ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                                   nccl_type(t.scalar_type()), ncclSum, comm_, comm_stream_));
    HYLAB_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    HYLAB_CUDA_CHECK(cudaEventRecord(done, comm_stream_));
    return std::make_unique<NcclWork>(done, device_.index());
  }
  void all_gather(const torch::Tensor& in, torch::Tensor& out) override {
    HYLAB_CHECK(in.is_cuda() && in.is_contiguous() && out.is_cuda() && out.is_contiguous() &&
                    out.numel() == in.numel() * env_.world && in.scalar_type() == out.scalar_type(),
                "NCCL all-gather needs contiguous CUDA tensors of one dtype, out = world x in");
    HYLAB_NCCL_CHECK(ncclAllGather(in.data_ptr(), out.data_ptr(), static_cast<size_t>(in.numel()),
                                   nccl_type(in.scalar_type()), comm_, stream()));
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
  cudaStream_t comm_stream_ = nullptr;
};

}  // namespace

std::unique_ptr<Dist> make_nccl_dist(const DistEnv& env, const torch::Device& device) {
  return std::make_unique<NcclDist>(env, device);
}

}  // namespace hylab::trainer
