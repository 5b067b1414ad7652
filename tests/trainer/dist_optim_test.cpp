// Data parallel over real gloo process groups on CPU: two child processes of this test binary
// (RANK/WORLD_SIZE and a c10d FileStore, as `hylab train --nproc 2` gives its ranks), each
// building a tiny hybrid model whose Muon groups hold several shapes, Mamba matrices among
// them ((128, 32) is both the MLP's c_fc and Mamba's in_proj).
//   - Sharded Muon (each rank orthogonalises its share, then all_gather) gives the parameters
//     of the unsharded step over 3 real training steps.
//   - The overlapped bucketed all-reduce (GradReducer, launched from gradient hooks during
//     backward) gives the gradients of the all-reduce after backward, and their mean over
//     the ranks' batches.
// The ranks write their tensors to files; the parent compares them with its own one-process
// computation.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <set>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/check.h"
#include "common/run_config.h"
#include "model/gpt.h"
#include "trainer/dist.h"
#include "trainer/grad_reducer.h"
#include "trainer/optim.h"
#include "trainer/schedule.h"
#include "common/spawn.h"

namespace hylab::trainer {
namespace {
namespace fs = std::filesystem;

constexpr int kSteps = 3;
constexpr int64_t kVocab = 64, kB = 2, kT = 8;

RunConfig tiny_config() {
  RunConfig c;
  c.set_n_embd(32);
  c.set_n_head(2);
  c.set_n_kv_head(1);  // c_k/c_v (16, 32): one more shape
  c.set_vocab_size(kVocab);
  c.set_max_seq_len(kT);
  c.set_mamba_d_state(8);
  c.set_device("cpu");
  apply_override(&c, "block_pattern", "T,M,T,M,M");
  return resolve_config(c);
}

// The batch of micro-step `micro` of rank `rank` at step `step`: (B, T) inputs and targets.
std::pair<torch::Tensor, torch::Tensor> batch(int step, int rank, int micro) {
  auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(1000 + 100 * step + 10 * rank + micro));
  const torch::Tensor t = torch::randint(kVocab, {kB, kT + 1}, gen, torch::kLong);
  return {t.slice(1, 0, kT), t.slice(1, 1, kT + 1)};
}

GPT make_model(const RunConfig& cfg) {
  torch::manual_seed(7);
  return GPT(gpt_config(cfg));
}

std::vector<torch::Tensor> snapshot(const std::vector<torch::Tensor>& ts, bool grads) {
  std::vector<torch::Tensor> out;
  for (const auto& t : ts) out.push_back((grads ? t.grad() : t).detach().clone());
  return out;
}

// Real training steps on the same batch on every rank (so gradients agree without a
// reduction and only the Muon step differs): sharded if dist has several ranks.
std::vector<torch::Tensor> train_steps(Dist* dist) {
  const RunConfig cfg = tiny_config();
  GPT model = make_model(cfg);
  Optimizers opt(*model, cfg, /*cuda=*/false, dist);
  for (int s = 0; s < kSteps; ++s) {
    opt.zero_grad();
    auto [x, y] = batch(s, 0, 0);
    model->loss(x, y).backward();
    clip_grad_norm(opt.all_params(), 1.0);
    opt.set_schedule(1.0, muon_momentum(s));
    opt.step();
  }
  return snapshot(model->parameters(), /*grads=*/false);
}

// Backward of micro-steps 0 and 1 of `rank` (each loss / 2), as the train loop accumulates.
void accumulate(GPTImpl& model, int rank, GradReducer* reducer) {
  for (int micro = 0; micro < 2; ++micro) {
    auto [x, y] = batch(0, rank, micro);
    if (reducer && micro == 1) reducer->arm();
    (model.loss(x, y) / 2.0).backward();
  }
}

void zero_grads(GPTImpl& model) {
  for (auto& p : model.parameters()) p.mutable_grad() = torch::Tensor();
}

// ---------------------------------------------------------------- the ranks

// Runs only inside a child process started by the tests below (HYLAB_DIST_TEST_CASE set).
TEST(DistRank, RunsWhenStartedAsARankByTheTestsBelow) {
  const char* which = std::getenv("HYLAB_DIST_TEST_CASE");
  if (which == nullptr) GTEST_SKIP() << "only in a child process";
  const std::string out = std::getenv("HYLAB_DIST_TEST_OUT");
  const DistEnv env = dist_env_from_environment();
  std::unique_ptr<Dist> dist = make_dist(env, torch::Device(torch::kCPU));
  const std::string prefix = fmt::format("{}/rank{}", out, env.rank);
  if (std::string(which) == "muon") {
    torch::save(train_steps(dist.get()), prefix + "_params.pt");
  } else {
    const RunConfig cfg = tiny_config();
    GPT model = make_model(cfg);
    // Small buckets, so several are launched from the hooks while backward runs.
    GradReducer reducer(*dist, model->parameters(), /*bucket_bytes=*/16 << 10);
    accumulate(*model, env.rank, &reducer);
    reducer.finish();
    const std::vector<torch::Tensor> overlapped = snapshot(model->parameters(), true);
    zero_grads(*model);
    accumulate(*model, env.rank, nullptr);  // hooks stay quiet when not armed
    dist->average_gradients(model->parameters());
    torch::save(overlapped, prefix + "_overlapped.pt");
    torch::save(snapshot(model->parameters(), true), prefix + "_after.pt");
    std::ofstream(prefix + "_counts.txt") << reducer.buckets().size() << " "
                                          << reducer.launched_during_backward() << "\n";
  }
  dist->barrier();
}

// ---------------------------------------------------------------- the parent

class DistOverGloo : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / fmt::format("hylab_dist_optim_{}", ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Starts 2 ranks of `which` and waits; false (with the test skipped) if there is no gloo.
  bool run_ranks(const std::string& which) {
    std::vector<Process> ranks;
    for (int r = 0; r < 2; ++r) {
      SpawnOptions o;
      o.extra_env = {"HYLAB_DIST_TEST_CASE=" + which, "HYLAB_DIST_TEST_OUT=" + dir_.string(),
                     fmt::format("RANK={}", r), "WORLD_SIZE=2", fmt::format("LOCAL_RANK={}", r),
                     "HYLAB_RENDEZVOUS_FILE=" + (dir_ / ("store_" + which)).string(),
                     "HYLAB_DIST_INIT_TIMEOUT_S=60", "OMP_NUM_THREADS=1"};
      o.stdout_file = (dir_ / fmt::format("rank{}.out", r)).string();
      o.stderr_file = (dir_ / fmt::format("rank{}.err", r)).string();
      ranks.push_back(Process::spawn(
          {self_executable_path(), "--gtest_filter=DistRank.RunsWhenStartedAsARankByTheTestsBelow"}, o));
    }
    bool ok = true;
    for (int r = 0; r < 2; ++r) {
      const int code = ranks[r].wait().code();
      const std::string log = slurp(dir_ / fmt::format("rank{}.out", r)) + slurp(dir_ / fmt::format("rank{}.err", r));
      if (log.find("needs gloo") != std::string::npos) {
        ok = false;
        continue;
      }
      EXPECT_EQ(code, 0) << "rank " << r << ":\n" << log;
    }
    return ok;
  }
  static std::string slurp(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  std::vector<torch::Tensor> load(const std::string& name) {
    std::vector<torch::Tensor> v;
    torch::load(v, (dir_ / name).string());
    return v;
  }
  fs::path dir_;
};

double max_abs_diff(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    EXPECT_EQ(a[i].sizes(), b[i].sizes()) << i;
    m = std::max(m, (a[i] - b[i]).abs().max().item<double>());
  }
  return m;
}

TEST_F(DistOverGloo, ShardedMuonGivesTheParametersOfTheUnshardedStep) {
  if (!run_ranks("muon")) GTEST_SKIP() << "this build has no gloo";
  const std::vector<torch::Tensor> reference = train_steps(nullptr);
  const std::vector<torch::Tensor> r0 = load("rank0_params.pt"), r1 = load("rank1_params.pt");
  // Both ranks apply the same gathered updates: identical parameters.
  EXPECT_EQ(max_abs_diff(r0, r1), 0.0);
  // Against one process: fp32 on CPU, the only difference is how many matrices one batched
  // Newton-Schulz holds. Weights are O(0.1-1), each step moves them by ~lr = 0.02.
  const double diff = max_abs_diff(r0, reference);
  EXPECT_LE(diff, 1e-6) << "sharded vs unsharded parameters after " << kSteps << " steps";
  // And the steps did move every matrix (the comparison is not between initial weights).
  const RunConfig cfg = tiny_config();
  GPT init = make_model(cfg);
  const auto p0 = init->parameters();
  int moved = 0;
  for (size_t i = 0; i < p0.size(); ++i) moved += !torch::equal(p0[i], reference[i]);
  EXPECT_EQ(moved, static_cast<int>(p0.size()));
  std::printf("sharded vs unsharded Muon, %d steps: max |difference| %.3g\n", kSteps, diff);
}

TEST_F(DistOverGloo, OverlappedAllReduceEqualsTheAllReduceAfterBackward) {
  if (!run_ranks("reduce")) GTEST_SKIP() << "this build has no gloo";
  const std::vector<torch::Tensor> overlapped0 = load("rank0_overlapped.pt"), after0 = load("rank0_after.pt");
  const std::vector<torch::Tensor> overlapped1 = load("rank1_overlapped.pt");
  EXPECT_EQ(max_abs_diff(overlapped0, after0), 0.0);  // bit for bit on 2 ranks
  EXPECT_EQ(max_abs_diff(overlapped0, overlapped1), 0.0);
  // The mean of the two ranks' gradients, computed here in one process.
  const RunConfig cfg = tiny_config();
  std::vector<std::vector<torch::Tensor>> local;
  for (int r = 0; r < 2; ++r) {
    GPT model = make_model(cfg);
    accumulate(*model, r, nullptr);
    local.push_back(snapshot(model->parameters(), true));
  }
  std::vector<torch::Tensor> mean;
  for (size_t i = 0; i < local[0].size(); ++i) mean.push_back((local[0][i] + local[1][i]) / 2);
  EXPECT_LE(max_abs_diff(overlapped0, mean), 1e-7);
  EXPECT_GT(max_abs_diff(local[0], mean), 1e-4);  // the ranks' batches differ: a real reduction
  // Buckets went out from the hooks during backward, not all at finish().
  std::istringstream counts(slurp(dir_ / "rank0_counts.txt"));
  int buckets = 0, during = 0;
  counts >> buckets >> during;
  EXPECT_GE(buckets, 3);
  EXPECT_GE(during, buckets - 1);  // wte's bucket may only complete with the last gradient
}

// Routing: which optimiser takes each Mamba matrix, by mamba_muon_params.
TEST(MambaMuonRouting, EachMatrixGoesToTheGroupTheConfigNames) {
  for (const std::string choice : {"in_proj,x_proj,dt_proj,out_proj", "in_proj,out_proj", "none"}) {
    RunConfig c = tiny_config();
    c.set_mamba_muon_params(choice);
    c = resolve_config(c);
    GPT model = make_model(c);
    const RoutedParams r = route_params(*model, c);
    const std::vector<std::string> to_muon = mamba_muon_param_list(choice);
    std::set<std::string> muon(r.muon_names.begin(), r.muon_names.end());
    std::set<std::string> adamw(r.mamba_adamw_names.begin(), r.mamba_adamw_names.end());
    int mamba_matrices = 0;
    for (const auto& item : model->named_parameters()) {
      const std::string& n = item.key();
      std::string kind;
      for (const char* k : {"in_proj", "x_proj", "dt_proj", "out_proj"}) {
        if (n.find(fmt::format(".mamba.{}.weight", k)) != std::string::npos) kind = k;
      }
      if (!kind.empty()) {
        ++mamba_matrices;
        const bool want_muon = std::find(to_muon.begin(), to_muon.end(), kind) != to_muon.end();
        EXPECT_EQ(muon.count(n), want_muon ? 1u : 0u) << choice << ": " << n;
        EXPECT_EQ(adamw.count(n), want_muon ? 0u : 1u) << choice << ": " << n;
      } else if (n.find(".attn.") != std::string::npos || n.find(".mlp.") != std::string::npos) {
        EXPECT_EQ(muon.count(n), 1u) << n;  // Transformer matrices stay with Muon
      } else {
        EXPECT_EQ(muon.count(n) + adamw.count(n), 0u) << n;  // wte, lm_head, Mamba scalars
      }
    }
    EXPECT_EQ(mamba_matrices, 3 * 4);
    Optimizers opt(*model, c, false);
    EXPECT_EQ(opt.all_params().size(), model->parameters().size());
    EXPECT_EQ(opt.muon().params().size(), r.muon_names.size());
    const double scale = std::pow(32.0 / 768.0, -0.5);
    bool has_group = false;
    for (const auto& g : opt.adamw().groups()) {
      if (g.name != "mamba_matrix") continue;
      has_group = true;
      EXPECT_EQ(g.params.size(), r.mamba_adamw.size());
      EXPECT_DOUBLE_EQ(g.initial_lr, c.scalar_lr() * scale);
      EXPECT_EQ(g.weight_decay, 0.0);
    }
    EXPECT_EQ(has_group, !r.mamba_adamw.empty()) << choice;
  }
}

TEST(MambaMuonRouting, ConfigValuesAreCheckedAndMadeCanonical) {
  RunConfig c = tiny_config();
  EXPECT_EQ(c.mamba_muon_params(), "in_proj,out_proj");  // the default since the ablation
  c.set_mamba_muon_params("out_proj, in_proj");
  EXPECT_EQ(resolve_config(c).mamba_muon_params(), "in_proj,out_proj");
  apply_override(&c, "mamba_muon_params", "none");
  EXPECT_EQ(resolve_config(c).mamba_muon_params(), "none");
  for (const char* bad : {"in_proj,conv1d", "in_proj,in_proj", "", "in_proj,"}) {
    c.set_mamba_muon_params(bad);
    try {
      resolve_config(c);
      ADD_FAILURE() << "accepted \"" << bad << "\"";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("mamba_muon_params"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace hylab::trainer
