// Parameter counts, training FLOPs per token and inference cache sizes, from the config
// alone (no model is built). Torch-free. The formulas are documented in docs/MODEL.md and
// tests/model/accounting_test.cpp checks them against built models.
//
// Vocabulary: C n_embd, H n_head, Hkv n_kv_head, Dh head dim, V vocab padded to 64,
// E = expand*C, N d_state, K d_conv, R dt_rank, L_T / L_M / L_M2 the number of T / M / M2
// layers, L_mlp the layers with an MLP (every T layer, M layers when mamba_use_mlp, M2
// layers when mamba2_use_mlp). M2 (Mamba-2) sizes carry a 2: E2 = mamba2_expand*C,
// H2 = E2/P heads of P = mamba2_headdim, G groups, N2 = mamba2_d_state, K2, Q = chunk size.
#pragma once

#include <cstdint>

#include "common/run_config.h"

namespace hylab {

struct ParamCounts {
  int64_t embedding = 0;  // V*C
  int64_t lm_head = 0;    // V*C
  int64_t attention = 0;  // L_T * (2*C*C + 2*C*Hkv*Dh)               c_q, c_proj, c_k, c_v
  int64_t mlp = 0;        // L_mlp * 8*C*C                            c_fc, c_proj
  int64_t mamba = 0;      // L_M * (3*C*E + E*(K + 2R + 3N + 3))      see mamba_layer_params
  int64_t mamba2 = 0;     // L_M2 * mamba2_layer_params
  int64_t total = 0;
};
ParamCounts count_params(const GPTConfig& cfg);

// One Mamba mixer: in_proj 2EC, conv EK+E, x_proj E(R+2N), dt_proj RE+E, A_log EN, D E,
// out_proj CE.
int64_t mamba_layer_params(const GPTConfig& cfg);

// One Mamba-2 mixer: in_proj C(2E2 + 2GN2 + H2), conv (E2 + 2GN2)(K2 + 1), dt_bias, A_log,
// D 3H2, norm_weight E2, out_proj E2C.
int64_t mamba2_layer_params(const GPTConfig& cfg);

// Training FLOPs (forward + backward) per token at a given sequence length, by part.
struct FlopsPerToken {
  double matmul = 0;     // 6 * (total params - embedding): every weight, 2 FLOPs fwd + 4 bwd
  double attention = 0;  // 12 * L_T * H * Dh * T: QK^T and AV over the full T (nanochat's rule)
  double mamba_scan = 0;  // 3 * L_M * (9*E*N + 2*E): the selective scan (mamba's count) + D skip + gate
  // 3 * L_M2 * (2*Q*G*N2 + 2*Q*E2 + 4*E2*N2): the chunked SSD as computed (full Q x Q blocks):
  // C B^T per group, its product with x per head, the chunk states and their read-out.
  double mamba2_ssd = 0;
  double total = 0;
};
FlopsPerToken flops_breakdown(const GPTConfig& cfg, int64_t seq_len);

// nanochat's estimate 6*(params - embedding) + 12*L*H*Dh*T, extended with the scan term.
double flops_per_token(const GPTConfig& cfg, int64_t seq_len);

// Inference cache of one sequence of seq_len tokens. activation_bytes: 2 for bf16, 4 fp32
// (the dtype of the KV cache and the conv state; the SSM state is always fp32).
struct CacheBytes {
  int64_t attention_per_layer = 0;  // 2 * Hkv * Dh * T * activation_bytes   (K and V)
  int64_t mamba_per_layer = 0;      // E * K * activation_bytes + E * N * 4  (conv + ssm state)
  int64_t mamba2_per_layer = 0;     // (E2 + 2*G*N2) * K2 * activation_bytes + E2 * N2 * 4
  int64_t attention = 0;            // L_T * attention_per_layer
  int64_t mamba = 0;                // L_M * mamba_per_layer
  int64_t mamba2 = 0;               // L_M2 * mamba2_per_layer
  int64_t total = 0;
};
CacheBytes cache_bytes(const GPTConfig& cfg, int64_t seq_len, int64_t activation_bytes);
int64_t cache_bytes_per_sequence(const GPTConfig& cfg, int64_t seq_len, int64_t activation_bytes);

}  // namespace hylab
