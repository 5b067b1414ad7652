// The inference engine: prefill eagerly, then decode one token per sequence per step,
// replaying a CUDA graph of the whole model's decode step where it can.
//
// On CUDA under bf16 autocast the engine decodes with its own copy of the model whose
// matrices (every Linear weight and lm_head) are bf16 and whose other parameters (wte,
// Mamba's A_log, D, dt bias, conv) stay fp32: exactly the operands autocast would hand the
// kernels, read at 2 bytes a weight instead of being cast from fp32 at every step. Its cache
// is bf16 (SSM states fp32). reset() captures GPTImpl::decode_step for the batch size and
// cache length in a CUDA graph (the position is a device tensor the graph advances itself,
// the attention reads it on the device: kernels/decode_attention), so a step is one graph
// launch. Everywhere else (CPU, LibTorch 1.13, a build without our kernels, or
// cuda_graphs = false) it runs the model it was given, eagerly, through forward_step.
// Both paths give the same tokens (tests/model/gpu_test.cpp, DecoderGraph*).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>

#include "model/gpt.h"

namespace at::cuda {
struct CUDAGraph;
}

namespace hylab {

struct DecoderOptions {
  bool autocast = false;    // CUDA bf16 autocast (the model's compute dtype on CUDA)
  bool cuda_graphs = true;  // capture the decode step where supported (see above)
};

class Decoder {
 public:
  // `model` must outlive the decoder (the eager path runs it; the graph path copies it, and
  // then needs it again only for load_weights(): it may move elsewhere meanwhile).
  Decoder(GPTImpl& model, DecoderOptions opt);
  ~Decoder();
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  // Copies the weights of `model` again (after training steps); captured graphs stay valid.
  void load_weights();

  // Makes room for `batch` sequences of up to `max_len` tokens and forgets any earlier ones.
  // The cache (and, on the graph path, the captured step) is kept when the shape repeats.
  void reset(int64_t batch, int64_t max_len);

  // idx (B, T) int64 prompts, T >= 1, at position 0 -> logits of their last token (B, V) fp32.
  torch::Tensor prefill(const torch::Tensor& idx);

  // next (B) int64, the tokens just chosen -> logits (B, V) fp32 for the position after.
  // On the graph path the result is a buffer the next step overwrites: use or copy it first.
  torch::Tensor step(const torch::Tensor& next);

  bool graphed() const { return graph_ != nullptr; }  // this shape decodes by graph replay
  bool uses_graphs() const { return use_graphs_; }    // the path chosen at construction
  int64_t pos() const { return cache_.pos; }          // tokens in the cache per sequence
  int64_t batch() const { return cache_.batch; }
  const InferenceCache& cache() const { return cache_; }
  torch::Device device() const { return device_; }
  // The model that decodes: the bf16 copy on the graph path, else the model given.
  GPTImpl& engine_model() { return copy_ ? *copy_ : model_; }

 private:
  void capture();

  GPTImpl& model_;
  DecoderOptions opt_;
  torch::Device device_;
  bool use_graphs_ = false;
  std::shared_ptr<GPTImpl> copy_;  // graph path: the bf16-matrix copy
  InferenceCache cache_;
  torch::Tensor idx_buf_, pos_buf_, logits_buf_;  // graph inputs / output: (B, 1), (1), (B, V)
  std::unique_ptr<at::cuda::CUDAGraph> graph_;
};

}  // namespace hylab
