// State carried between forward_step calls while decoding (GPTImpl::make_cache).
//
// Attention layers keep a KV cache that grows with the sequence; Mamba and Mamba-2 layers
// keep a constant-size state: the last K conv inputs and the SSM state. That difference is
// what cache_bytes_per_sequence (model/accounting.h) reports per layer type. Each mixer
// makes and reads its own fields (Mixer::make_cache, model/mixer.h).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace hylab {

struct LayerCache {
  // Transformer layers: keys/values of positions [0, pos), after rotary and QK-norm.
  torch::Tensor k, v;  // (B, Hkv, max_len, Dh), the model's dtype
  // Mamba layers: the last K inputs of the conv (pre-conv, oldest first) and the scan state.
  //   M:  conv_state (B, E, K), ssm_state (B, E, N)
  //   M2: conv_state (B, E + 2GN, K), ssm_state (B, H, P, N)
  torch::Tensor conv_state;  // the model's dtype
  torch::Tensor ssm_state;   // fp32
};

struct InferenceCache {
  int64_t batch = 0;    // B
  int64_t max_len = 0;  // positions the KV caches hold
  int64_t pos = 0;      // tokens already consumed (the next token's position)
  std::vector<LayerCache> layers;  // one per layer, only the fields of its type defined

  // Bytes held by every defined tensor.
  int64_t bytes() const {
    int64_t n = 0;
    for (const auto& l : layers) {
      for (const auto* t : {&l.k, &l.v, &l.conv_state, &l.ssm_state}) {
        if (t->defined()) n += t->numel() * static_cast<int64_t>(t->element_size());
      }
    }
    return n;
  }

  // Forget the sequence (states to zero, pos to 0); keeps the allocation.
  void reset() {
    pos = 0;
    for (auto& l : layers) {
      for (auto* t : {&l.k, &l.v, &l.conv_state, &l.ssm_state}) {
        if (t->defined()) t->zero_();
      }
    }
  }
};

}  // namespace hylab
