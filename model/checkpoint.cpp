// Checkpoint directories (see checkpoint.h).
#include "model/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <torch/csrc/jit/serialization/pickle.h>

#include "common/check.h"

namespace hylab {
namespace fs = std::filesystem;

namespace {

constexpr int kFormat = 1;

[[noreturn]] void io_fail(const std::string& what, const std::string& path) {
  HYLAB_FAIL("checkpoint: {} {}: {}", what, path, std::strerror(errno));
}

// Writes `data` to `path` and fsyncs it.
void write_durable(const std::string& path, const char* data, size_t size) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) io_fail("cannot create", path);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      io_fail("cannot write", path);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    io_fail("cannot fsync", path);
  }
  if (::close(fd) != 0) io_fail("cannot close", path);
}

void fsync_dir(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;  // best effort: some filesystems do not allow it
  ::fsync(fd);
  ::close(fd);
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) HYLAB_FAIL("checkpoint: cannot read {} (is it a checkpoint directory?)", path);
  return std::vector<char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void save_tensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors) {
  c10::Dict<std::string, at::Tensor> dict;
  for (const auto& [name, t] : tensors) {
    HYLAB_CHECK(t.defined(), "checkpoint: tensor {} is undefined", name);
    dict.insert(name, t.detach().to(torch::kCPU).contiguous());
  }
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  write_durable(path, bytes.data(), bytes.size());
}

std::map<std::string, torch::Tensor> load_tensors(const std::string& path) {
  const c10::IValue v = torch::pickle_load(read_file(path));
  HYLAB_CHECK(v.isGenericDict(), "checkpoint: {} does not hold a name -> tensor dict", path);
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : v.toGenericDict()) {
    HYLAB_CHECK(item.key().isString() && item.value().isTensor(),
                "checkpoint: {} holds a non-(name, tensor) entry", path);
    out[item.key().toStringRef()] = item.value().toTensor();
  }
  return out;
}

// The model's state: parameters then buffers, by name.
std::map<std::string, torch::Tensor> model_state(GPTImpl& model) {
  std::map<std::string, torch::Tensor> state;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) state[item.key()] = item.value();
  for (const auto& item : model.named_buffers(/*recurse=*/true)) state[item.key()] = item.value();
  return state;
}

// A stored config, resolved again. Old checkpoints without block_pattern become all
// Transformer; a stored `depth: 0` means "widths given directly" and is dropped first.
RunConfig config_from_meta(const nlohmann::json& meta, const std::string& where) {
  HYLAB_CHECK(meta.contains("config"), "checkpoint: {} has no \"config\" entry", where);
  const nlohmann::json& c = meta["config"];
  RunConfig cfg = config_from_json(c.is_string() ? c.get<std::string>() : c.dump());
  if (cfg.has_depth() && cfg.depth() == 0) cfg.clear_depth();
  return resolve_config(cfg);
}

std::string describe(const GPTConfig& g) {
  return fmt::format("n_layer {}, n_embd {}, n_head {}, n_kv_head {}, vocab_size {}, block_pattern {}",
                     g.n_layer, g.n_embd, g.n_head, g.n_kv_head, g.vocab_size,
                     compact_block_pattern(g.block_pattern));
}

}  // namespace

void save_checkpoint(const std::string& dir, GPTImpl& model,
                     const std::map<std::string, torch::Tensor>& extra, const nlohmann::json& meta) {
  const RunConfig cfg = config_from_meta(meta, "save_checkpoint meta");
  const std::string want = describe(gpt_config(cfg)), have = describe(model.config());
  HYLAB_CHECK(want == have, "save_checkpoint: meta's config ({}) does not describe the model ({})",
              want, have);
  nlohmann::json m = meta;
  m["config"] = nlohmann::json::parse(config_to_json(cfg, false));
  m["format"] = kFormat;

  const fs::path target = fs::path(dir);
  const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) HYLAB_FAIL("checkpoint: cannot create {}: {}", parent.string(), ec.message());
  const fs::path tmp = parent / (target.filename().string() + ".tmp." + std::to_string(::getpid()));
  fs::remove_all(tmp, ec);
  fs::create_directory(tmp, ec);
  if (ec) HYLAB_FAIL("checkpoint: cannot create {}: {}", tmp.string(), ec.message());

  save_tensors((tmp / "model.pt").string(), model_state(model));
  save_tensors((tmp / "extra.pt").string(), extra);
  const std::string meta_text = m.dump(2) + "\n";
  write_durable((tmp / "meta.json").string(), meta_text.data(), meta_text.size());
  fsync_dir(tmp.string());

  // Replace: move an old checkpoint aside first (rename cannot replace a non-empty dir).
  fs::path old;
  if (fs::exists(target)) {
    old = parent / (target.filename().string() + ".old." + std::to_string(::getpid()));
    fs::remove_all(old, ec);
    fs::rename(target, old, ec);
    if (ec) HYLAB_FAIL("checkpoint: cannot move {} aside: {}", target.string(), ec.message());
  }
  fs::rename(tmp, target, ec);
  if (ec) HYLAB_FAIL("checkpoint: cannot rename {} to {}: {}", tmp.string(), target.string(), ec.message());
  fsync_dir(parent.string());
  if (!old.empty()) fs::remove_all(old, ec);
}

Checkpoint load_checkpoint(const std::string& dir, GPTImpl* model, torch::Device device) {
  Checkpoint ck;
  const std::string meta_path = (fs::path(dir) / "meta.json").string();
  const std::vector<char> meta_bytes = read_file(meta_path);
  try {
    ck.meta = nlohmann::json::parse(meta_bytes.begin(), meta_bytes.end());
  } catch (const nlohmann::json::exception& e) {
    HYLAB_FAIL("checkpoint: {} is not valid JSON: {}", meta_path, e.what());
  }
  ck.config = config_from_meta(ck.meta, meta_path);

  if (model != nullptr) {
    const std::string want = describe(gpt_config(ck.config)), have = describe(model->config());
    HYLAB_CHECK(want == have, "load_checkpoint: {} holds a model with {}, the given model has {}",
                dir, want, have);
    auto stored = load_tensors((fs::path(dir) / "model.pt").string());
    auto state = model_state(*model);
    std::vector<std::string> missing, unexpected, wrong_shape;
    for (const auto& [name, t] : state) {
      auto it = stored.find(name);
      if (it == stored.end()) {
        missing.push_back(name);
      } else if (it->second.sizes() != t.sizes()) {
        wrong_shape.push_back(fmt::format("{} (stored {}, model {})", name,
                                          c10::str(it->second.sizes()), c10::str(t.sizes())));
      }
    }
    for (const auto& [name, t] : stored) {
      if (!state.count(name)) unexpected.push_back(name);
    }
    if (!missing.empty() || !unexpected.empty() || !wrong_shape.empty()) {
      auto join = [](const std::vector<std::string>& v) {
        std::string s;
        for (size_t i = 0; i < v.size() && i < 8; ++i) s += (i ? ", " : "") + v[i];
        if (v.size() > 8) s += fmt::format(", ... ({} in all)", v.size());
        return s.empty() ? std::string("none") : s;
      };
      HYLAB_FAIL("load_checkpoint: {}/model.pt does not match the model: missing [{}], unexpected [{}], "
                 "wrong shape [{}]",
                 dir, join(missing), join(unexpected), join(wrong_shape));
    }
    torch::NoGradGuard no_grad;
    for (auto& [name, t] : state) t.copy_(stored.at(name));
  }

  const fs::path extra_path = fs::path(dir) / "extra.pt";
  for (auto& [name, t] : load_tensors(extra_path.string())) ck.extra[name] = t.to(device);
  return ck;
}

GPT load_model(const std::string& dir, torch::Device device, Checkpoint* info) {
  const std::string meta_path = (fs::path(dir) / "meta.json").string();
  const std::vector<char> bytes = read_file(meta_path);
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(bytes.begin(), bytes.end());
  } catch (const nlohmann::json::exception& e) {
    HYLAB_FAIL("checkpoint: {} is not valid JSON: {}", meta_path, e.what());
  }
  GPT model(gpt_config(config_from_meta(meta, meta_path)));
  model->to(device);
  Checkpoint ck = load_checkpoint(dir, model.get(), device);
  if (info != nullptr) *info = std::move(ck);
  return model;
}

std::string resolve_checkpoint_dir(const std::string& path) {
  if (fs::exists(fs::path(path) / "meta.json")) return path;
  const fs::path dir = fs::path(path) / "checkpoints";
  std::string best;
  long best_step = -1;
  std::error_code ec;
  if (fs::is_directory(dir, ec)) {
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("step_", 0) != 0 || !fs::exists(entry.path() / "meta.json")) continue;
      const std::string digits = name.substr(5);
      if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) continue;
      const long step = std::stol(digits);
      if (step > best_step) {
        best_step = step;
        best = entry.path().string();
      }
    }
  }
  if (best.empty()) {
    HYLAB_FAIL("no checkpoint at {}: expected a checkpoint directory (with meta.json) or a run "
               "directory with checkpoints/step_N/",
               path);
  }
  return best;
}

}  // namespace hylab
