// The inference engine (see decoder.h).
#include "model/decoder.h"

#include "common/check.h"
#include "model/compat.h"

#if HYLAB_HAS_CUDA_GRAPHS
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#else
namespace at::cuda {
struct CUDAGraph {};  // never constructed without graph support
}  // namespace at::cuda
#endif

namespace hylab {
namespace {

// Decode-step warm-ups before a capture: cuBLAS handles and workspaces for the capture
// stream, lazily initialised kernels.
constexpr int kWarmupSteps = 2;

}  // namespace

Decoder::Decoder(GPTImpl& model, DecoderOptions opt)
    : model_(model), opt_(opt), device_(model.lm_head->weight.device()) {
  const torch::Device dev = device_;
  use_graphs_ = HYLAB_HAS_CUDA_GRAPHS && opt.cuda_graphs && dev.is_cuda() && opt.autocast;
  if (!use_graphs_) return;
  copy_ = std::make_shared<GPTImpl>(model.config(), /*init=*/false);
  copy_->to(dev);
  copy_->set_use_kernels(model.use_kernels());
  copy_->eval();
  for (auto& p : copy_->parameters()) p.requires_grad_(false);
  load_weights();
}

Decoder::~Decoder() = default;

void Decoder::load_weights() {
  if (!copy_) return;
  torch::NoGradGuard no_grad;
  // The matrices autocast would cast to bf16 become bf16; everything else keeps its dtype.
  const GPTImpl::ParamGroups src = model_.param_groups(), dst = copy_->param_groups();
  auto copy_group = [](const std::vector<torch::Tensor>& from, std::vector<torch::Tensor>& to,
                       bool to_bf16) {
    HYLAB_CHECK(from.size() == to.size(), "Decoder: the model and its copy differ in parameters");
    for (size_t i = 0; i < from.size(); ++i) {
      if (to_bf16 && to[i].scalar_type() != torch::kBFloat16) {
        to[i].set_data(torch::empty(to[i].sizes(), to[i].options().dtype(torch::kBFloat16)));
      }
      to[i].copy_(from[i]);
    }
  };
  auto dst_matrix = dst.matrix, dst_head = dst.lm_head, dst_emb = dst.embedding,
       dst_scalar = dst.scalar;
  copy_group(src.matrix, dst_matrix, true);
  copy_group(src.lm_head, dst_head, true);
  copy_group(src.embedding, dst_emb, false);
  copy_group(src.scalar, dst_scalar, false);
  for (int i = 0; i < copy_->config().n_layer; ++i) copy_->block(i)->mixer().prepare_decode();
}

void Decoder::reset(int64_t batch, int64_t max_len) {
  torch::NoGradGuard no_grad;
  GPTImpl& m = engine_model();
  if (cache_.batch == batch && cache_.max_len == max_len) {
    cache_.reset();
    return;
  }
  graph_.reset();
  cache_ = InferenceCache();  // free the old cache before the new one
  {
    compat::AutocastGuard autocast(opt_.autocast);
    cache_ = m.make_cache(batch, max_len);
  }
  if (use_graphs_) capture();
}

void Decoder::capture() {
#if HYLAB_HAS_CUDA_GRAPHS
  GPTImpl& m = *copy_;
  const auto dev = device();
  idx_buf_ = torch::zeros({cache_.batch, 1}, torch::dtype(torch::kLong).device(dev));
  pos_buf_ = torch::zeros({1}, torch::dtype(torch::kLong).device(dev));
  auto run = [&] {
    compat::AutocastGuard autocast(opt_.autocast);
    auto logits = m.decode_step(idx_buf_, pos_buf_, cache_);  // (B, V)
    pos_buf_.add_(1);
    return logits;
  };
  torch::cuda::synchronize();
  auto graph = std::make_unique<at::cuda::CUDAGraph>();
  {
    const c10::cuda::CUDAStreamGuard on_side(c10::cuda::getStreamFromPool());
    for (int i = 0; i < kWarmupSteps; ++i) run();
    graph->capture_begin();
    logits_buf_ = run();
    graph->capture_end();
  }
  torch::cuda::synchronize();
  graph_ = std::move(graph);
  cache_.reset();  // the warm-ups wrote into it
  pos_buf_.zero_();
#endif
}

torch::Tensor Decoder::prefill(const torch::Tensor& idx) {
  torch::NoGradGuard no_grad;
  HYLAB_CHECK(cache_.batch > 0, "Decoder::prefill: call reset(batch, max_len) first");
  HYLAB_CHECK(idx.dim() == 2 && idx.size(0) == cache_.batch && idx.size(1) >= 1,
              "Decoder::prefill: idx must be (B={}, T >= 1), got {}", cache_.batch,
              c10::str(idx.sizes()));
  HYLAB_CHECK(cache_.pos == 0, "Decoder::prefill: the cache already holds {} tokens (reset first)",
              cache_.pos);
  compat::AutocastGuard autocast(opt_.autocast);
  auto logits =
      engine_model().forward_step(idx.to(device()), cache_, /*last_only=*/true);  // (B, 1, V)
  if (graph_) pos_buf_.fill_(cache_.pos);
  return logits.select(1, -1);  // (B, V)
}

torch::Tensor Decoder::step(const torch::Tensor& next) {
  torch::NoGradGuard no_grad;
  HYLAB_CHECK(cache_.pos >= 1, "Decoder::step: prefill first");
  HYLAB_CHECK(cache_.pos < cache_.max_len,
              "Decoder::step: the cache is full ({} positions; reset with a larger max_len)",
              cache_.max_len);
  HYLAB_CHECK(next.numel() == cache_.batch, "Decoder::step: next must hold B={} tokens, got {}",
              cache_.batch, next.numel());
  auto idx = next.reshape({cache_.batch, 1}).to(device(), torch::kLong);
#if HYLAB_HAS_CUDA_GRAPHS
  if (graph_) {
    idx_buf_.copy_(idx);
    graph_->replay();
    cache_.pos += 1;
    return logits_buf_;
  }
#endif
  compat::AutocastGuard autocast(opt_.autocast);
  return engine_model().forward_step(idx, cache_).select(1, 0);  // (B, V)
}

}  // namespace hylab
