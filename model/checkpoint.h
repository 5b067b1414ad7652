// Checkpoints: one directory per checkpoint, written atomically (a temporary sibling
// directory, fsynced, then renamed into place), so a reader never sees half a checkpoint:
//
//   <dir>/model.safetensors   the model's named parameters and buffers
//   <dir>/extra.safetensors   named tensors of the caller (optimizer state, RNG, loader position)
//   <dir>/meta.json           {"config": <resolved RunConfig JSON>, "format": 1, ...caller fields}
//
// The tensor files are safetensors (https://github.com/huggingface/safetensors, "Format"):
// 8-byte little-endian header length N, N bytes of JSON {"__metadata__": {"format": "pt"},
// name: {"dtype", "shape", "data_offsets": [begin, end]}} padded with spaces to a multiple
// of 8, then the tensors' raw little-endian bytes, contiguous, in header (name) order. Not
// torch pickles: streamed, the same bytes under LibTorch 1.13 and 2.x, and opened unchanged
// from Python by safetensors.torch.load_file (docs/TRAINING.md shows how). Checkpoints
// written before the rename (model.pt/extra.pt, the same layout) are still read.
// A run keeps its checkpoints in <run_dir>/checkpoints/step_XXXXXX/.
#pragma once

#include <torch/torch.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "common/run_config.h"
#include "model/gpt.h"

namespace hylab {

// Writes the checkpoint directory `dir` (replacing an existing one). `meta` must hold
// "config" (the resolved RunConfig as a JSON object or string) and it must describe
// `model` (same shape), else hylab::Error. Throws hylab::Error on I/O failure.
void save_checkpoint(const std::string& dir, GPTImpl& model,
                     const std::map<std::string, torch::Tensor>& extra, const nlohmann::json& meta);

struct Checkpoint {
  RunConfig config;     // resolved; a config without block_pattern resolves to all Transformer
  nlohmann::json meta;  // meta.json as written
  std::map<std::string, torch::Tensor> extra;  // on the requested device
};

// Reads `dir`. With a model, copies every parameter and buffer into it (names and shapes
// must match exactly; mismatches are listed in the error). Extra tensors go to `device`.
Checkpoint load_checkpoint(const std::string& dir, GPTImpl* model_or_null, torch::Device device);

// Builds the model a checkpoint describes, on `device`, with its weights.
GPT load_model(const std::string& dir, torch::Device device, Checkpoint* info = nullptr);

// One safetensors file of named tensors (any device in; CPU tensors out). Written with fsync;
// every read is checked against the file size. Throws hylab::Error naming the path.
void save_safetensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors);
std::map<std::string, torch::Tensor> load_safetensors(const std::string& path);

// `path` itself when it is a checkpoint (has meta.json), else the newest complete
// <path>/checkpoints/step_N by N. Throws hylab::Error naming `path` when there is none.
std::string resolve_checkpoint_dir(const std::string& path);

}  // namespace hylab
