// The mixer table and the Mixers of the T and M kinds (see mixer.h). The M2 kind's Mixer
// lives in model/mamba2.cpp.
#include "model/mixer.h"

#include "common/check.h"
#include "model/mamba.h"
#include "model/transformer.h"

namespace hylab {
namespace {

// T: causal self-attention (model/transformer.h), reached only through this adapter.
class AttentionMixer final : public Mixer {
 public:
  explicit AttentionMixer(const GPTConfig& cfg)
      : attn_(cfg), n_kv_head_(cfg.n_kv_head), head_dim_(cfg.head_dim()) {}

  std::shared_ptr<torch::nn::Module> module() const override { return attn_.ptr(); }

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos,
                        const torch::Tensor& sin) override {
    return attn_(x, cos, sin);
  }

  torch::Tensor forward_fused(const torch::Tensor& x, const torch::Tensor& cos,
                              const torch::Tensor& sin) override {
    return attn_->forward_fused(x, cos, sin);
  }

  torch::Tensor forward_step(const torch::Tensor& x, const torch::Tensor& cos,
                             const torch::Tensor& sin, LayerCache& cache, int64_t pos) override {
    HYLAB_CHECK(cache.k.defined(), "attention forward_step: the layer cache has no KV tensors");
    return attn_->forward(x, cos, sin, &cache, pos);
  }

  torch::Tensor decode_step(const torch::Tensor& x, const torch::Tensor& cos,
                            const torch::Tensor& sin, LayerCache& cache, const torch::Tensor& pos,
                            bool use_kernels) override {
    HYLAB_CHECK(cache.k.defined(), "attention decode_step: the layer cache has no KV tensors");
    return attn_->decode(x, cos, sin, cache, pos, use_kernels);  // x + attn(norm(x))
  }

  LayerCache make_cache(int64_t batch, int64_t max_len, torch::Device device,
                        torch::Dtype dtype) const override {
    LayerCache c;
    auto opts = torch::TensorOptions().device(device).dtype(dtype);
    c.k = torch::zeros({batch, n_kv_head_, max_len, head_dim_}, opts);  // (B, Hkv, max_len, Dh)
    c.v = torch::zeros({batch, n_kv_head_, max_len, head_dim_}, opts);
    return c;
  }

  void prepare_decode() override { attn_->fuse_qkv(); }  // one GEMM for q, k, v

 private:
  CausalSelfAttention attn_;
  int64_t n_kv_head_, head_dim_;
};

// M: Mamba-1's selective scan (model/mamba.h).
class MambaMixerAdapter final : public Mixer {
 public:
  explicit MambaMixerAdapter(const GPTConfig& cfg)
      : mamba_(cfg), E_(cfg.d_inner()), K_(cfg.mamba_d_conv), N_(cfg.mamba_d_state) {}

  std::shared_ptr<torch::nn::Module> module() const override { return mamba_.ptr(); }

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& /*cos*/,
                        const torch::Tensor& /*sin*/) override {
    return mamba_(x);
  }

  torch::Tensor forward_step(const torch::Tensor& x, const torch::Tensor& /*cos*/,
                             const torch::Tensor& /*sin*/, LayerCache& cache,
                             int64_t pos) override {
    return mamba_->forward_step(x, cache, pos);
  }

  torch::Tensor decode_step(const torch::Tensor& x, const torch::Tensor& /*cos*/,
                            const torch::Tensor& /*sin*/, LayerCache& cache,
                            const torch::Tensor& /*pos*/, bool /*use_kernels*/) override {
    return mamba_->decode(x, cache);  // x + mamba(norm(x))
  }

  LayerCache make_cache(int64_t batch, int64_t /*max_len*/, torch::Device device,
                        torch::Dtype dtype) const override {
    LayerCache c;
    auto opts = torch::TensorOptions().device(device).dtype(dtype);
    c.conv_state = torch::zeros({batch, E_, K_}, opts);                      // (B, E, K)
    c.ssm_state = torch::zeros({batch, E_, N_}, opts.dtype(torch::kFloat));  // (B, E, N)
    return c;
  }

  // Not matrices Muon should see, even the 2-D ones: A_log is a per-channel list of decay
  // rates, conv1d_weight a set of K-tap filters.
  std::vector<torch::Tensor> scalar_parameters() const override {
    return {mamba_->A_log, mamba_->D, mamba_->dt_proj->bias, mamba_->conv1d_weight,
            mamba_->conv1d_bias};
  }
  std::vector<torch::Tensor> own_init_parameters() const override {
    return mamba_->own_init_parameters();
  }
  void reset_parameters() override { mamba_->reset_mamba_parameters(); }
  void set_use_kernels(bool on) override { mamba_->set_use_kernels(on); }
  void set_fused_decode(bool on) override { mamba_->set_fused_decode(on); }
  void prepare_decode() override { mamba_->prepare_decode(); }

 private:
  MambaMixer mamba_;
  int64_t E_, K_, N_;
};

bool always(const GPTConfig& /*cfg*/) { return true; }
bool mamba_mlp(const GPTConfig& cfg) { return cfg.mamba_use_mlp; }
bool mamba2_mlp(const GPTConfig& cfg) { return cfg.mamba2_use_mlp; }

// The table: one row per block type.
const MixerType kMixerTypes[] = {
    {BlockType::kTransformer, "attn", build_attention_mixer, always},
    {BlockType::kMamba, "mamba", build_mamba_mixer, mamba_mlp},
    {BlockType::kMamba2, "mamba2", build_mamba2_mixer, mamba2_mlp},
};

}  // namespace

std::unique_ptr<Mixer> build_attention_mixer(const GPTConfig& cfg) {
  return std::make_unique<AttentionMixer>(cfg);
}

std::unique_ptr<Mixer> build_mamba_mixer(const GPTConfig& cfg) {
  return std::make_unique<MambaMixerAdapter>(cfg);
}

const MixerType& mixer_type(BlockType type) {
  for (const auto& row : kMixerTypes) {
    if (row.type == type) return row;
  }
  HYLAB_FAIL("mixer_type: block type {} has no row in the mixer table (model/mixer.cpp)",
             block_type_letter(type));
}

}  // namespace hylab
