// The dashboard's JSON API (dashboard/api.h) on a real SQLite file, and its HTTP server
// (dashboard/server.h) on a real loopback socket, read by cpp-httplib's client.
#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "common/check.h"
#include "common/run_config.h"
#include "dashboard/api.h"
#include "dashboard/server.h"
#include "store/store.h"

namespace hylab::dashboard {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class DashboardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("hylab_dashboard_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    db_path_ = (dir_ / "hylab.db").string();
    store_ = store::Store::open(db_path_);
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }

  store::NewTrial new_trial(const std::string& pattern, int index) {
    RunConfig c;
    c.set_depth(2);
    c.set_max_seq_len(32);
    c.set_device_batch_size(4);
    c.set_total_batch_size(-1);
    c.set_num_iterations(10);
    c.add_block_pattern(pattern);
    store::NewTrial t;
    t.resolved = resolve_config(c);
    t.params = {{"block_pattern", pattern}};
    t.trial_index = index;
    return t;
  }

  // Three trials: T*2 succeeded (summary val_bpb 2.25), M*2 running at step 4 of 10 (val_bpb
  // metric 3.0), T,M pending.
  void make_sweep() {
    store::SweepRow s;
    s.name = "patterns";
    Tx tx(store_->db());
    sweep_id_ =
        store_->create_sweep(s, {new_trial("T*2", 0), new_trial("M*2", 1), new_trial("T,M", 2)});
    for (const auto& t : store_->trials_of(sweep_id_)) ids_.push_back(t.trial_id);
    store_->start_attempt(ids_[0], 1, "w1", false);
    store::put_metrics(
        store_->db(), ids_[0], 1,
        {{0, "train_loss", 5.0, 1}, {1, "train_loss", 4.0, 2}, {1, "val_bpb", 2.5, 2}});
    RunSummary sum;
    sum.params_total = 1000;
    sum.flops_per_token = 6000;
    sum.final_val_bpb = 2.25;
    sum.tok_per_s = 1500;
    sum.steps = 2;
    sum.provenance_json = R"({"hylab_version": "0.1.0", "gpu_name": "NVIDIA H200", "host": "node7"})";
    store::put_summary(store_->db(), ids_[0], sum);
    store_->finish_attempt(ids_[0], 1, proto::ATTEMPT_STATE_SUCCEEDED, "", 0, "step 1\nsample: The river ran\n");
    store_->set_trial_state(ids_[0], proto::TRIAL_STATE_SUCCEEDED, 0, "");
    store_->start_attempt(ids_[1], 1, "w1", false);
    store::put_metrics(store_->db(), ids_[1], 1,
                       {{0, "train_loss", 6.0, 1}, {4, "val_bpb", 3.0, 3}});
    store_->db().exec("UPDATE trials SET last_step = 4 WHERE trial_id = " +
                      std::to_string(ids_[1]));
    tx.commit();
  }

  using Tx = store::Tx;
  fs::path dir_;
  std::string db_path_;
  std::unique_ptr<store::Store> store_;
  int64_t sweep_id_ = 0;
  std::vector<int64_t> ids_;
};

TEST_F(DashboardTest, SweepsCountStatesProgressAndEta) {
  make_sweep();
  auto db = store::Db::open(db_path_, true);
  const double created = sweeps(*db, 0)[0]["created_at"].get<double>();
  const json s = sweeps(*db, created + 100)[0];
  EXPECT_EQ(s["name"], "patterns");
  EXPECT_EQ(s["trials"], 3);
  EXPECT_EQ(s["succeeded"], 1);
  EXPECT_EQ(s["running"], 1);
  EXPECT_EQ(s["pending"], 1);
  // Finished 1 + running (last_step 4 + 1) / 10 + pending 0, over 3 trials.
  EXPECT_DOUBLE_EQ(s["progress"].get<double>(), 1.5 / 3);
  EXPECT_DOUBLE_EQ(s["elapsed_s"].get<double>(), 100);
  EXPECT_DOUBLE_EQ(s["eta_s"].get<double>(), 100);  // elapsed * (1 - p) / p with p = 0.5

  const json one = sweep(*db, sweep_id_, created + 100);
  ASSERT_EQ(one["trials"].size(), 3u);
  EXPECT_EQ(one["trials"][0]["trial_id"], ids_[0]);
  EXPECT_DOUBLE_EQ(one["trials"][0]["val_bpb"].get<double>(), 2.25);
  EXPECT_EQ(one["trials"][1]["state"], "running");
  EXPECT_THROW(sweep(*db, 999, 0), NotFound);
}

TEST_F(DashboardTest, CurvesCarryTokensAndFlopsPerStepAndAreDownsampled) {
  make_sweep();
  {
    std::vector<MetricPoint> pts;
    for (int s = 2; s <= 100; ++s) pts.push_back({s, "train_loss", 4.0 - s * 0.01, 3});
    Tx tx(store_->db());
    store::put_metrics(store_->db(), ids_[0], 1, pts);
    tx.commit();
  }
  auto db = store::Db::open(db_path_, true);
  const json c = sweep_curves(*db, sweep_id_, "train_loss", 2000);
  ASSERT_EQ(c["trials"].size(), 3u);
  EXPECT_EQ(c["trials"][0]["points"].size(), 101u);
  EXPECT_EQ(c["trials"][0]["tokens_per_step"], 4 * 32);  // total_batch_size -1: one micro-step
  EXPECT_EQ(c["trials"][0]["flops_per_token"], 6000);
  EXPECT_TRUE(c["trials"][1]["flops_per_token"].is_null());  // no summary yet
  EXPECT_EQ(c["trials"][2]["points"].size(), 0u);

  const json few = sweep_curves(*db, sweep_id_, "train_loss", 11)["trials"][0]["points"];
  ASSERT_EQ(few.size(), 11u);
  EXPECT_EQ(few[0][0], 0);
  EXPECT_EQ(few[10][0], 100);  // the newest point is always kept
  EXPECT_EQ(few[5][0], 50);

  const json t = trial_curves(*db, ids_[1], 2000);
  EXPECT_EQ(t["metrics"]["train_loss"].size(), 1u);
  EXPECT_EQ(t["metrics"]["val_bpb"][0][0], 4);
  EXPECT_THROW(trial_curves(*db, 999, 10), NotFound);
}

TEST_F(DashboardTest, LayerMapHasOneRowPerTrialBestFirst) {
  make_sweep();
  auto db = store::Db::open(db_path_, true);
  const json rows = layer_map(*db, sweep_id_);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0]["layers"], "TT");  // 2.25 (summary)
  EXPECT_EQ(rows[1]["layers"], "MM");  // 3.0 (newest val_bpb metric of a running trial)
  EXPECT_EQ(rows[2]["layers"], "TM");  // not evaluated: last
  EXPECT_TRUE(rows[2]["val_bpb"].is_null());
  EXPECT_EQ(expand_pattern("(T,M)*2,M"), "TMTMM");
  EXPECT_EQ(expand_pattern("T*2,M*2"), "TTMM");
}

TEST_F(DashboardTest, TrialShowsConfigRunDirAndSamples) {
  make_sweep();
  auto db = store::Db::open(db_path_, true);
  json t = trial(*db, ids_[0], (dir_ / "work").string());
  EXPECT_EQ(t["trial"]["state"], "succeeded");
  EXPECT_EQ(t["params"]["block_pattern"], "T*2");
  EXPECT_EQ(t["config"]["n_layer"], 2);
  EXPECT_EQ(t["summary"]["final_val_bpb"], 2.25);
  EXPECT_EQ(t["sweep"]["name"], "patterns");
  EXPECT_EQ(t["attempts"].size(), 1u);
  EXPECT_FALSE(t["run_dir"]["exists"].get<bool>());
  EXPECT_EQ(t["samples"], json::array({"The river ran"}));  // from the attempt's log tail
  // Provenance from the summary's columns (the ones the trainer filled in).
  EXPECT_EQ(t["provenance"], json({{"hylab_version", "0.1.0"}, {"gpu_name", "NVIDIA H200"}, {"host", "node7"}}));
  EXPECT_TRUE(trial(*db, ids_[1], "")["provenance"].is_null());  // no summary yet

  // With the run directory on this machine, its train.log is the source.
  const fs::path run = dir_ / "work" / t["trial"]["run_dir"].get<std::string>();
  fs::create_directories(run);
  std::ofstream(run / "train.log") << "step 0\nsample: Once upon a time\nsample: The meaning of\n";
  t = trial(*db, ids_[0], (dir_ / "work").string());
  EXPECT_TRUE(t["run_dir"]["exists"].get<bool>());
  EXPECT_EQ(t["run_dir"]["resolved"], fs::absolute(run).string());
  EXPECT_EQ(t["samples"], json::array({"Once upon a time", "The meaning of"}));
  EXPECT_THROW(trial(*db, 999, ""), NotFound);
}

TEST_F(DashboardTest, ParetoFrontOverSucceededTrialsAndGroups) {
  make_sweep();
  {
    // M*2 finishes slower and worse than T*2 (dominated); T,M finishes faster but worse (front).
    Tx tx(store_->db());
    RunSummary m;
    m.final_val_bpb = 3.0;
    m.tok_per_s = 1000;
    store::put_summary(store_->db(), ids_[1], m);
    store_->set_trial_state(ids_[1], proto::TRIAL_STATE_SUCCEEDED, 0, "");
    RunSummary tm;
    tm.final_val_bpb = 2.5;
    tm.tok_per_s = 3000;
    store::put_summary(store_->db(), ids_[2], tm);
    store_->set_trial_state(ids_[2], proto::TRIAL_STATE_SUCCEEDED, 0, "");
    tx.commit();
  }
  auto db = store::Db::open(db_path_, true);
  const json p = pareto(*db, sweep_id_, "tok_per_s");
  EXPECT_EQ(p["x_goal"], "maximize");
  ASSERT_EQ(p["points"].size(), 3u);
  std::map<int64_t, bool> front;
  for (const auto& pt : p["points"]) front[pt["trial_id"].get<int64_t>()] = pt["front"].get<bool>();
  EXPECT_TRUE(front[ids_[0]]);
  EXPECT_FALSE(front[ids_[1]]);
  EXPECT_TRUE(front[ids_[2]]);
  EXPECT_THROW(pareto(*db, sweep_id_, "val_bpb"), std::invalid_argument);
  EXPECT_THROW(pareto(*db, 999, "tok_per_s"), NotFound);

  const json g = groups(*db, sweep_id_, {}, false);  // default: by the swept block_pattern
  EXPECT_EQ(g["group_by"], json::array({"block_pattern"}));
  ASSERT_EQ(g["groups"].size(), 3u);
  EXPECT_EQ(g["groups"][0]["key"]["block_pattern"], "T*2");
  EXPECT_DOUBLE_EQ(g["groups"][0]["mean"].get<double>(), 2.25);
  EXPECT_EQ(g["groups"][0]["n"], 1);
  // n = 1 everywhere: the footer warns, as under `hylab results --group_by`.
  EXPECT_NE(g["footer"].get<std::string>().find("NO ERROR BARS"), std::string::npos) << g["footer"];
  EXPECT_THROW(groups(*db, sweep_id_, {"no_such_column"}, false), std::invalid_argument);
}

// ---- the HTTP server ----

ServerOptions options(const std::string& db) {
  ServerOptions o;
  o.db_path = db;
  o.address = {"127.0.0.1", 0};
  return o;
}

TEST_F(DashboardTest, ServesPagesAssetsAndTheApiReadOnly) {
  make_sweep();
  const fs::path web = dir_ / "web" / "chart.js" / "package" / "dist";
  fs::create_directories(web);
  std::ofstream(web / "chart.umd.min.js") << "/* chart */";
  ServerOptions o = options(db_path_);
  o.web_dir = (dir_ / "web").string();
  Server server(o);
  server.start();
  httplib::Client cli("127.0.0.1", server.port());

  for (const std::string page : {"/", "/sweep/1", "/sweep/1/layers", "/trial/2"}) {
    auto r = cli.Get(page.c_str());
    ASSERT_TRUE(r) << page;
    EXPECT_EQ(r->status, 200) << page;
    EXPECT_NE(r->body.find("/static/app.js"), std::string::npos) << page;
  }
  auto js = cli.Get("/static/app.js");
  ASSERT_TRUE(js);
  EXPECT_EQ(js->status, 200);
  EXPECT_NE(js->body.find("window.hylab"), std::string::npos);
  EXPECT_EQ(cli.Get("/static/nothing.js")->status, 404);
  auto chart = cli.Get("/vendor/chart.js");
  EXPECT_EQ(chart->status, 200);
  EXPECT_EQ(chart->body, "/* chart */");

  auto sweeps_r = cli.Get("/api/sweeps");
  ASSERT_EQ(sweeps_r->status, 200);
  EXPECT_EQ(json::parse(sweeps_r->body)[0]["trials"], 3);
  auto curves =
      cli.Get(("/api/sweeps/" + std::to_string(sweep_id_) + "/curves?metric=val_bpb").c_str());
  ASSERT_EQ(curves->status, 200);
  EXPECT_EQ(json::parse(curves->body)["trials"][1]["points"][0][1], 3.0);
  EXPECT_EQ(cli.Get("/api/sweeps/999")->status, 404);
  EXPECT_EQ(cli.Get("/api/trials/999")->status, 404);
  EXPECT_EQ(cli.Get("/api/nothing")->status, 404);
  auto bad = cli.Get("/api/sweeps/1/curves?max_points=lots");
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(json::parse(bad->body)["error"].get<std::string>().find("max_points=lots"),
            std::string::npos);
  EXPECT_EQ(cli.Get("/api/sweeps/1/curves?metric=x;drop")->status, 400);
  EXPECT_EQ(cli.Get("/api/sweeps/1/pareto?x=tok_per_s")->status, 200);
  EXPECT_EQ(cli.Get("/api/sweeps/1/pareto?x=nonsense")->status, 400);
  EXPECT_EQ(cli.Get("/api/sweeps/1/groups")->status, 200);
  EXPECT_EQ(cli.Get("/api/sweeps/1/groups?group_by=nonsense")->status, 400);
  EXPECT_EQ(cli.Post("/api/sweeps", "{}", "application/json")->status, 405);
  EXPECT_EQ(cli.Delete("/api/sweeps/1")->status, 405);
  // A page elsewhere reaching us through DNS rebinding names its own host.
  EXPECT_EQ(cli.Get("/api/sweeps", httplib::Headers{{"Host", "evil.example:8080"}})->status, 403);
  server.stop();
}

TEST_F(DashboardTest, ReadersDoNotWaitForTheWriter) {
  make_sweep();
  Server server(options(db_path_));
  server.start();
  httplib::Client cli("127.0.0.1", server.port());
  cli.set_read_timeout(5, 0);
  const std::string path = "/api/sweeps/" + std::to_string(sweep_id_) + "/curves?metric=train_loss";
  {
    // The coordinator in the middle of an iteration's transaction: the dashboard answers at
    // once from the last committed state.
    Tx tx(store_->db());
    store::put_metrics(store_->db(), ids_[2], 1, {{0, "train_loss", 7.0, 1}});
    const auto t0 = std::chrono::steady_clock::now();
    auto r = cli.Get(path.c_str());
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
    EXPECT_EQ(json::parse(r->body)["trials"][2]["points"].size(), 0u);
    tx.commit();
  }
  EXPECT_EQ(json::parse(cli.Get(path.c_str())->body)["trials"][2]["points"].size(), 1u);
}

TEST_F(DashboardTest, TokenRequiredOffLoopbackAndEnforcedWhenSet) {
  make_sweep();
  ServerOptions open_to_all = options(db_path_);
  open_to_all.address.host = "0.0.0.0";
  try {
    Server s(open_to_all);
    FAIL() << "a non-loopback bind without a token was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bearer token"), std::string::npos) << e.what();
  }
  ServerOptions bad_token = options(db_path_);
  bad_token.token = "a b;c";
  EXPECT_THROW(Server s(bad_token), Error);
  EXPECT_THROW(parse_http_address("localhost:http", "--http"), Error);
  EXPECT_EQ(parse_http_address(":9000", "--http").host, "127.0.0.1");
  EXPECT_EQ(parse_http_address("[::1]:9000", "--http").host, "::1");
  EXPECT_EQ(parse_http_address("0.0.0.0:80", "--http").port, 80);

  ServerOptions o = options(db_path_);
  o.token = "s3cret-Token";
  Server server(o);
  server.start();
  httplib::Client cli("127.0.0.1", server.port());
  EXPECT_EQ(cli.Get("/api/sweeps")->status, 401);
  EXPECT_EQ(cli.Get("/")->status, 401);
  EXPECT_EQ(cli.Get("/api/sweeps", httplib::Headers{{"Authorization", "Bearer wrong"}})->status,
            401);
  EXPECT_EQ(
      cli.Get("/api/sweeps", httplib::Headers{{"Authorization", "Bearer s3cret-Token"}})->status,
      200);
  // A browser trades ?token= for a cookie once.
  auto login = cli.Get("/sweep/1?token=s3cret-Token");
  EXPECT_EQ(login->status, 302);
  EXPECT_EQ(login->get_header_value("Location"), "/sweep/1");
  const std::string cookie = login->get_header_value("Set-Cookie");
  EXPECT_EQ(cookie.rfind("hylab_token=s3cret-Token;", 0), 0u) << cookie;
  EXPECT_NE(cookie.find("HttpOnly"), std::string::npos);
  EXPECT_EQ(
      cli.Get("/api/sweeps", httplib::Headers{{"Cookie", "theme=dark; hylab_token=s3cret-Token"}})
          ->status,
      200);
  EXPECT_EQ(cli.Get("/api/sweeps", httplib::Headers{{"Cookie", "hylab_token=s3cret"}})->status,
            401);
}

}  // namespace
}  // namespace hylab::dashboard
