// Checkpoint directories (see checkpoint.h).
#include "model/checkpoint.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "common/check.h"
#include "common/fd_io.h"
#include "common/safetensors_header.h"

namespace hylab {

namespace {

constexpr int kFormat = 1;

[[noreturn]] void io_fail(const std::string& what, const std::string& path) {
  HYLAB_FAIL("checkpoint: {} {}: {}", what, path, std::strerror(errno));
}

// Writes all of `data` to fd or closes fd and throws, naming `path`.
void write_all(int fd, const char* data, size_t size, const std::string& path) {
  if (!hylab::write_all(fd, data, size)) {
    ::close(fd);
    io_fail("cannot write", path);
  }
}

// Writes `data` to `path` and fsyncs it.
void write_durable(const std::string& path, const char* data, size_t size) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) io_fail("cannot create", path);
  write_all(fd, data, size, path);
  if (::fsync(fd) != 0) {
    ::close(fd);
    io_fail("cannot fsync", path);
  }
  if (::close(fd) != 0) io_fail("cannot close", path);
}

// Paths with POSIX calls, not std::filesystem: a pip LibTorch exports its own copy of
// std::filesystem (libtorch_cpu.so: 142 symbols), which interposes on ours at run time.
std::string join(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  return a.back() == '/' ? a + b : a + "/" + b;
}
std::string parent_of(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : p.substr(0, slash);
}
std::string base_of(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}
bool path_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}
bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
void make_dirs(const std::string& p) {
  if (p.empty() || is_dir(p)) return;
  make_dirs(parent_of(p));
  if (::mkdir(p.c_str(), 0755) != 0 && errno != EEXIST) io_fail("cannot create directory", p);
}
void remove_tree(const std::string& p) {
  if (!path_exists(p)) return;
  ::nftw(p.c_str(), [](const char* f, const struct stat*, int, struct FTW*) { return ::remove(f); },
         16, FTW_DEPTH | FTW_PHYS);
}
std::vector<std::string> list_dir(const std::string& p) {
  std::vector<std::string> names;
  DIR* d = ::opendir(p.c_str());
  if (d == nullptr) return names;
  while (const dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  return names;
}
void rename_or_fail(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    HYLAB_FAIL("checkpoint: cannot rename {} to {}: {}", from, to, std::strerror(errno));
  }
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

// ---- safetensors: u64 little-endian header size, JSON header
// {"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...}, raw bytes ----

const std::vector<std::pair<at::ScalarType, const char*>>& safetensors_dtypes() {
  static const std::vector<std::pair<at::ScalarType, const char*>> t = {
      {at::kFloat, "F32"}, {at::kDouble, "F64"}, {at::kBFloat16, "BF16"}, {at::kHalf, "F16"},
      {at::kLong, "I64"},  {at::kInt, "I32"},    {at::kShort, "I16"},     {at::kChar, "I8"},
      {at::kByte, "U8"},   {at::kBool, "BOOL"}};
  return t;
}

const char* dtype_name(at::ScalarType t, const std::string& tensor) {
  for (const auto& [st, name] : safetensors_dtypes()) {
    if (st == t) return name;
  }
  HYLAB_FAIL("checkpoint: tensor {} has dtype {}, which checkpoints do not store", tensor, c10::toString(t));
}


// Streams the tensors to `path` (no second copy of the whole file in memory) and fsyncs.
}  // namespace

void save_safetensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors) {
  std::vector<torch::Tensor> cpu;
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", "pt"}};  // what safetensors.torch.save_file writes
  int64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    HYLAB_CHECK(t.defined(), "checkpoint: tensor {} is undefined", name);
    cpu.push_back(t.detach().to(torch::kCPU).contiguous());
    const int64_t bytes = cpu.back().numel() * static_cast<int64_t>(cpu.back().element_size());
    header[name] = {{"dtype", dtype_name(t.scalar_type(), name)},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data section starts 8-byte aligned
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) io_fail("cannot create", path);
  uint64_t n = text.size();
  char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xff);  // little-endian
  write_all(fd, len, 8, path);
  write_all(fd, text.data(), text.size(), path);
  for (const auto& t : cpu) {
    write_all(fd, static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size(), path);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    io_fail("cannot fsync", path);
  }
  if (::close(fd) != 0) io_fail("cannot close", path);
}

std::map<std::string, torch::Tensor> load_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) HYLAB_FAIL("checkpoint: cannot read {} (is it a checkpoint directory?)", path);
  in.seekg(0, std::ios::end);
  const int64_t file_size = in.tellg();
  in.seekg(0);
  unsigned char len[8] = {};
  in.read(reinterpret_cast<char*>(len), 8);
  if (!in) HYLAB_FAIL("checkpoint: {} is not a safetensors file (shorter than 8 bytes)", path);
  const uint64_t n = safetensors_header_length(len, static_cast<uint64_t>(file_size), path);
  std::string text(n, '\0');
  in.read(text.data(), static_cast<std::streamsize>(n));
  // Every shape and offset is checked against the file size before a tensor is allocated.
  const auto entries = parse_safetensors_header(text, static_cast<uint64_t>(file_size), path);
  const int64_t data_start = 8 + static_cast<int64_t>(n);
  std::map<std::string, torch::Tensor> out;
  for (const SafetensorsEntry& e : entries) {
    at::ScalarType dtype = at::kFloat;
    for (const auto& [st, dn] : safetensors_dtypes()) {
      if (e.dtype == dn) dtype = st;
    }
    auto t = torch::empty(e.shape, torch::TensorOptions().dtype(dtype));
    in.seekg(data_start + e.begin);
    in.read(static_cast<char*>(t.data_ptr()), e.end - e.begin);
    HYLAB_CHECK(static_cast<bool>(in), "checkpoint: {}: cannot read tensor {}", path, e.name);
    out[e.name] = t;
  }
  return out;
}

namespace {

constexpr const char* kModelFile = "model.safetensors";
constexpr const char* kExtraFile = "extra.safetensors";

// <dir>/<name>, or <dir>/<old_name> for a checkpoint written before the rename.
std::string tensor_file(const std::string& dir, const char* name, const char* old_name) {
  const std::string path = join(dir, name);
  if (path_exists(path)) return path;
  const std::string old = join(dir, old_name);
  return path_exists(old) ? old : path;  // neither: the error names the current name
}

// The model's state: parameters then buffers, by name.
std::map<std::string, torch::Tensor> model_state(GPTImpl& model) {
  std::map<std::string, torch::Tensor> state;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) state[item.key()] = item.value();
  for (const auto& item : model.named_buffers(/*recurse=*/true)) state[item.key()] = item.value();
  return state;
}

RunConfig config_from_meta(const nlohmann::json& meta, const std::string& where) {
  return checkpoint_config(meta, where);
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

  const std::string parent = parent_of(dir), name = base_of(dir);
  make_dirs(parent);
  const std::string tmp = join(parent, name + ".tmp." + std::to_string(::getpid()));
  remove_tree(tmp);
  if (::mkdir(tmp.c_str(), 0755) != 0) io_fail("cannot create directory", tmp);

  save_safetensors(join(tmp, kModelFile), model_state(model));
  save_safetensors(join(tmp, kExtraFile), extra);
  const std::string meta_text = m.dump(2) + "\n";
  write_durable(join(tmp, "meta.json"), meta_text.data(), meta_text.size());
  fsync_dir(tmp);

  // Replace: move an old checkpoint aside first (rename cannot replace a non-empty dir).
  std::string old;
  if (path_exists(dir)) {
    old = join(parent, name + ".old." + std::to_string(::getpid()));
    remove_tree(old);
    rename_or_fail(dir, old);
  }
  rename_or_fail(tmp, dir);
  fsync_dir(parent);
  if (!old.empty()) remove_tree(old);
}

Checkpoint load_checkpoint(const std::string& dir, GPTImpl* model, torch::Device device) {
  Checkpoint ck;
  const std::string meta_path = join(dir, "meta.json");
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
    const std::string model_path = tensor_file(dir, kModelFile, "model.pt");
    auto stored = load_safetensors(model_path);
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
      HYLAB_FAIL("load_checkpoint: {} does not match the model: missing [{}], unexpected [{}], "
                 "wrong shape [{}]",
                 model_path, join(missing), join(unexpected), join(wrong_shape));
    }
    torch::NoGradGuard no_grad;
    for (auto& [name, t] : state) t.copy_(stored.at(name));
  }

  for (auto& [name, t] : load_safetensors(tensor_file(dir, kExtraFile, "extra.pt"))) {
    ck.extra[name] = t.to(device);
  }
  return ck;
}

GPT load_model(const std::string& dir, torch::Device device, Checkpoint* info) {
  const std::string meta_path = join(dir, "meta.json");
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
  if (path_exists(join(path, "meta.json"))) return path;
  const std::string dir = join(path, "checkpoints");
  std::string best;
  long best_step = -1;
  for (const std::string& name : list_dir(dir)) {
    if (name.rfind("step_", 0) != 0 || !path_exists(join(join(dir, name), "meta.json"))) continue;
    const std::string digits = name.substr(5);
    if (digits.empty() || digits.size() > 12 ||
        digits.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    const long step = std::stol(digits);
    if (step > best_step) {
      best_step = step;
      best = join(dir, name);
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
