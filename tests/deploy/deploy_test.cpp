// deploy/k8s: every manifest parses (yaml-cpp) and keeps the invariants the binaries rely on:
// one coordinator replica; the database, keys, allow-list and token mounted where the flags
// point; every Secret and claim referenced is defined (Secrets as make-secrets.sh really
// writes them); GPU requests; ports that match; liveness probes that call real commands.
// deploy/slurm: the scripts start a real coordinator and worker that find each other.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <thread>

namespace hylab {
namespace {

namespace fs = std::filesystem;

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Runs a shell command; returns (exit status, stdout + stderr).
std::pair<int, std::string> sh(const std::string& cmd) {
  const fs::path out = fs::temp_directory_path() / ("hylab_deploy_out_" + std::to_string(getpid()));
  const int st = std::system((cmd + " >'" + out.string() + "' 2>&1").c_str());
  std::string text = slurp(out);
  fs::remove(out);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, text};
}

bool wait_until(const std::function<bool()>& f, int timeout_s) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (std::chrono::steady_clock::now() < end) {
    if (f()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return f();
}

// "--db=/x" or "--db /x" in an argument list.
std::string flag_value(const std::vector<std::string>& args, const std::string& flag) {
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i].rfind(flag + "=", 0) == 0) return args[i].substr(flag.size() + 1);
    if (args[i] == flag && i + 1 < args.size()) return args[i + 1];
  }
  return "";
}

std::vector<std::string> strings(const YAML::Node& n) {
  std::vector<std::string> out;
  if (n && n.IsSequence()) {
    for (const auto& x : n) out.push_back(x.as<std::string>());
  }
  return out;
}

class K8sManifests : public ::testing::Test {
 protected:
  // Parsed once for the suite (make-secrets.sh runs `hylab keygen` three times).
  static void SetUpTestSuite() {
    src_ = env_or("HYLAB_SOURCE_DIR", ".");
    bin_ = env_or("HYLAB_BIN", "");
    if (bin_.empty() || !fs::exists(bin_)) return;
    k8s_ = fs::path(src_) / "deploy" / "k8s";
    ASSERT_TRUE(fs::exists(k8s_ / "kustomization.yaml"));
    const YAML::Node kust = YAML::LoadFile((k8s_ / "kustomization.yaml").string());
    namespace_ = kust["namespace"].as<std::string>();
    std::set<std::string> listed;
    for (const auto& r : strings(kust["resources"])) listed.insert(r);
    for (const auto& e : fs::directory_iterator(k8s_)) {
      const std::string name = e.path().filename().string();
      if (e.path().extension() != ".yaml" || name == "kustomization.yaml") continue;
      EXPECT_TRUE(listed.count(name)) << name << " is not in kustomization.yaml's resources";
      for (const YAML::Node& doc : YAML::LoadAllFromFile(e.path().string())) {
        if (!doc.IsNull()) add(doc, name);
      }
    }
    for (const auto& r : listed)
      EXPECT_TRUE(fs::exists(k8s_ / r)) << "kustomization lists a missing " << r;

    // The Secrets, as make-secrets.sh writes them (real `hylab keygen`).
    dir_ = fs::temp_directory_path() / ("hylab_k8s_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::ofstream(dir_ / "alice.pub") << "a user's public key\n";
    const auto [status, out] =
        sh("HYLAB='" + bin_ + "' '" + (k8s_ / "make-secrets.sh").string() + "' '" +
           (dir_ / "out").string() + "' '" + (dir_ / "alice.pub").string() + "'");
    ASSERT_EQ(status, 0) << out;
    for (const YAML::Node& doc : YAML::LoadAllFromFile((dir_ / "out" / "secrets.yaml").string())) {
      if (doc.IsNull()) continue;
      ASSERT_EQ(doc["kind"].as<std::string>(), "Secret");
      EXPECT_EQ(doc["metadata"]["namespace"].as<std::string>(), namespace_);
      auto& keys = secrets_[doc["metadata"]["name"].as<std::string>()];
      for (const auto& kv : doc["data"]) keys.insert(kv.first.as<std::string>());
    }
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }
  void SetUp() override {
    if (bin_.empty() || !fs::exists(bin_)) GTEST_SKIP() << "HYLAB_BIN not set (run through ctest)";
    ASSERT_FALSE(secrets_.empty()) << "make-secrets.sh made no Secrets";
  }

  static void add(const YAML::Node& doc, const std::string& file) {
    const std::string kind = doc["kind"].as<std::string>();
    const std::string name = doc["metadata"]["name"].as<std::string>();
    if (kind != "Namespace") {
      EXPECT_EQ(doc["metadata"]["namespace"].as<std::string>(""), namespace_)
          << file << ": " << name;
    }
    by_kind_[kind].push_back(doc);
  }

  // The one container of a workload running `hylab SUBCOMMAND`, with its pod spec.
  struct Found {
    YAML::Node workload, pod, container;
    std::vector<std::string> argv;  // command + args
  };
  std::vector<Found> running(const std::string& subcommand) {
    std::vector<Found> out;
    for (const char* kind : {"StatefulSet", "Deployment", "DaemonSet"}) {
      for (const auto& w : by_kind_[kind]) {
        const YAML::Node pod = w["spec"]["template"]["spec"];
        for (const auto& c : pod["containers"]) {
          std::vector<std::string> argv = strings(c["command"]);
          for (const auto& a : strings(c["args"])) argv.push_back(a);
          if (argv.size() >= 2 && argv[1] == subcommand) out.push_back({w, pod, c, argv});
        }
      }
    }
    return out;
  }

  // The volume mounted at the longest mountPath that contains `path`.
  YAML::Node volume_for(const Found& f, const std::string& path,
                        std::string* mount_path = nullptr) {
    std::string best, vol;
    for (const auto& m : f.container["volumeMounts"]) {
      const std::string mp = m["mountPath"].as<std::string>();
      if ((path == mp || path.rfind(mp + "/", 0) == 0) && mp.size() > best.size()) {
        best = mp;
        vol = m["name"].as<std::string>();
      }
    }
    if (mount_path) *mount_path = best;
    for (const auto& v : f.pod["volumes"]) {
      if (v["name"].as<std::string>() == vol) return v;
    }
    for (const auto& t : f.workload["spec"]["volumeClaimTemplates"]) {
      if (t["metadata"]["name"].as<std::string>() == vol)
        return YAML::Load("{claimTemplate: " + vol + "}");
    }
    return YAML::Node();
  }

  // `file` is a key of a defined Secret, mounted where the path points.
  void expect_secret_file(const Found& f, const std::string& file, const std::string& what) {
    std::string mp;
    const YAML::Node v = volume_for(f, file, &mp);
    ASSERT_TRUE(v && v["secret"]) << what << " " << file << " is not on a Secret volume";
    const std::string secret = v["secret"]["secretName"].as<std::string>();
    ASSERT_TRUE(secrets_.count(secret))
        << what << ": Secret " << secret << " is not made by make-secrets.sh";
    std::string key = file.substr(mp.size() + 1);
    for (const auto& item : v["secret"]["items"]) {
      if (item["path"].as<std::string>() == key) key = item["key"].as<std::string>();
    }
    EXPECT_TRUE(secrets_[secret].count(key))
        << what << ": Secret " << secret << " has no key " << key;
  }

  // Flags of `hylab SUB` that `args` use but `hylab SUB --help` does not know.
  std::vector<std::string> unknown_flags(const std::vector<std::string>& args) {
    const auto [status, help] = sh("'" + bin_ + "' " + args[1] + " --help");
    EXPECT_EQ(status, 0) << help;
    std::vector<std::string> out;
    for (size_t i = 2; i < args.size(); ++i) {
      if (args[i].rfind("--", 0) != 0) continue;
      const std::string name = args[i].substr(0, args[i].find('='));
      if (help.find(name + " ") == std::string::npos &&
          help.find(name + ",") == std::string::npos &&
          help.find(name + "\n") == std::string::npos) {
        out.push_back(name);
      }
    }
    return out;
  }

  static std::string src_, bin_, namespace_;
  static fs::path k8s_, dir_;
  static std::map<std::string, std::vector<YAML::Node>> by_kind_;
  static std::map<std::string, std::set<std::string>> secrets_;
};

std::string K8sManifests::src_, K8sManifests::bin_, K8sManifests::namespace_;
fs::path K8sManifests::k8s_, K8sManifests::dir_;
std::map<std::string, std::vector<YAML::Node>> K8sManifests::by_kind_;
std::map<std::string, std::set<std::string>> K8sManifests::secrets_;

TEST_F(K8sManifests, CoordinatorIsOneReplicaWithItsStateWhereTheFlagsPoint) {
  const auto coords = running("coordinator");
  ASSERT_EQ(coords.size(), 1u) << "exactly one workload runs `hylab coordinator`";
  const Found& c = coords[0];
  EXPECT_EQ(c.workload["kind"].as<std::string>(), "StatefulSet");
  EXPECT_EQ(c.workload["spec"]["replicas"].as<int>(), 1);
  // The database on the persistent volume (a claim template), not in the container.
  const std::string db = flag_value(c.argv, "--db");
  ASSERT_FALSE(db.empty());
  const YAML::Node dbv = volume_for(c, db);
  ASSERT_TRUE(dbv && dbv["claimTemplate"])
      << "--db " << db << " is not on the StatefulSet's volume";
  // Keys, allow-list and token from Secrets that exist.
  expect_secret_file(c, flag_value(c.argv, "--key"), "--key");
  std::string mp;
  const YAML::Node allow = volume_for(c, flag_value(c.argv, "--allow"), &mp);
  ASSERT_TRUE(allow && allow["secret"]) << "--allow is not a Secret folder";
  const auto& allowed = secrets_[allow["secret"]["secretName"].as<std::string>()];
  EXPECT_TRUE(allowed.count("worker.pub"));
  EXPECT_TRUE(allowed.count("alice.pub")) << "user keys given to make-secrets.sh are allowed";
  for (const auto& k : allowed)
    EXPECT_EQ(fs::path(k).extension(), ".pub") << k;  // --allow reads *.pub
  expect_secret_file(c, flag_value(c.argv, "--http_token_file"), "--http_token_file");
  // Ports: --bind and --http match named container ports, and the Services reach them.
  std::map<std::string, int> ports;
  for (const auto& p : c.container["ports"])
    ports[p["name"].as<std::string>()] = p["containerPort"].as<int>();
  const std::string bind = flag_value(c.argv, "--bind");
  EXPECT_EQ(bind.substr(bind.rfind(':') + 1), std::to_string(ports["zmq"]));
  const std::string http = flag_value(c.argv, "--http");
  EXPECT_EQ(http.substr(http.rfind(':') + 1), std::to_string(ports["http"]));
  const YAML::Node labels =
      c.pod.IsNull() ? YAML::Node() : c.workload["spec"]["template"]["metadata"]["labels"];
  std::set<std::string> exposed;
  for (const auto& s : by_kind_["Service"]) {
    bool selects = true;
    for (const auto& kv : s["spec"]["selector"]) {
      selects = selects && labels[kv.first.as<std::string>()].as<std::string>("") ==
                               kv.second.as<std::string>();
    }
    if (!selects) continue;
    for (const auto& p : s["spec"]["ports"]) exposed.insert(p["targetPort"].as<std::string>());
  }
  EXPECT_TRUE(exposed.count("zmq")) << "no Service reaches the coordinator's ZeroMQ port";
  EXPECT_TRUE(exposed.count("http")) << "no Service reaches the dashboard port";
  // The liveness probe makes a real request with a key the coordinator allows.
  const std::vector<std::string> probe = strings(c.container["livenessProbe"]["exec"]["command"]);
  ASSERT_GE(probe.size(), 2u);
  EXPECT_EQ(probe[0], c.argv[0]);
  expect_secret_file(c, flag_value(probe, "--key"), "liveness --key");
  expect_secret_file(c, flag_value(probe, "--server_key"), "liveness --server_key");
  EXPECT_TRUE(allowed.count(fs::path(flag_value(probe, "--key")).stem().string() + ".pub"))
      << "the probe's key is not on the allow-list";
  EXPECT_EQ(unknown_flags(probe), std::vector<std::string>{});
  // Every coordinator flag exists, except the dashboard's until its HTTP server is merged.
  for (const auto& f : unknown_flags(c.argv)) {
    EXPECT_TRUE(f == "--http" || f == "--http_token_file") << "hylab coordinator has no " << f;
  }
}

TEST_F(K8sManifests, WorkersRequestGpusAndFindKeysCoordinatorAndSharedWorkDir) {
  const auto workers = running("worker");
  ASSERT_EQ(workers.size(), 1u);
  const Found& w = workers[0];
  const std::string kind = w.workload["kind"].as<std::string>();
  EXPECT_TRUE(kind == "DaemonSet" || kind == "Deployment") << kind;
  EXPECT_GT(w.container["resources"]["limits"]["nvidia.com/gpu"].as<int>(0), 0);
  EXPECT_EQ(flag_value(w.argv, "--gpus"), "auto");
  std::map<std::string, std::string> env;
  for (const auto& e : w.container["env"]) {
    if (e["value"]) env[e["name"].as<std::string>()] = e["value"].as<std::string>();
  }
  expect_secret_file(w, env["HYLAB_KEY"], "HYLAB_KEY");
  expect_secret_file(w, env["HYLAB_SERVER_KEY"], "HYLAB_SERVER_KEY");
  // HYLAB_COORDINATOR names the coordinator's Service and port.
  const std::string ep = env["HYLAB_COORDINATOR"];
  ASSERT_EQ(ep.rfind("tcp://", 0), 0u) << ep;
  const std::string host = ep.substr(6, ep.rfind(':') - 6), port = ep.substr(ep.rfind(':') + 1);
  bool found = false;
  for (const auto& s : by_kind_["Service"]) {
    if (s["metadata"]["name"].as<std::string>() != host) continue;
    for (const auto& p : s["spec"]["ports"])
      found = found || std::to_string(p["port"].as<int>()) == port;
  }
  EXPECT_TRUE(found) << ep << " is not a Service port";
  // --work_dir and the working directory on the shared ReadWriteMany claim.
  const YAML::Node wv = volume_for(w, flag_value(w.argv, "--work_dir"));
  ASSERT_TRUE(wv && wv["persistentVolumeClaim"]) << "--work_dir is not on a claim";
  const std::string claim = wv["persistentVolumeClaim"]["claimName"].as<std::string>();
  bool rwx = false;
  for (const auto& pvc : by_kind_["PersistentVolumeClaim"]) {
    if (pvc["metadata"]["name"].as<std::string>() == claim) {
      for (const auto& m : strings(pvc["spec"]["accessModes"])) rwx = rwx || m == "ReadWriteMany";
    }
  }
  EXPECT_TRUE(rwx) << "claim " << claim << " is not defined as ReadWriteMany";
  const YAML::Node cwd = volume_for(w, w.container["workingDir"].as<std::string>(""));
  EXPECT_TRUE(cwd && cwd["persistentVolumeClaim"])
      << "trials resolve data paths from workingDir: share it";
  EXPECT_EQ(unknown_flags(w.argv), std::vector<std::string>{});
  // Grace period covers --kill_grace_ms.
  EXPECT_GE(w.pod["terminationGracePeriodSeconds"].as<int>() * 1000,
            std::stoi(flag_value(w.argv, "--kill_grace_ms")));
  // The liveness probe asks the coordinator about this very worker id.
  const YAML::Node lp = w.container["livenessProbe"];
  ASSERT_TRUE(lp && lp["exec"]);
  const std::string script = strings(lp["exec"]["command"]).back();
  EXPECT_NE(script.find("workers"), std::string::npos);
  EXPECT_NE(flag_value(w.argv, "--worker_id").find("NODE_NAME"), std::string::npos);
  EXPECT_NE(script.find("$NODE_NAME"), std::string::npos);
}

TEST_F(K8sManifests, EverySecretAndClaimReferencedIsDefined) {
  std::set<std::string> claims;
  for (const auto& pvc : by_kind_["PersistentVolumeClaim"])
    claims.insert(pvc["metadata"]["name"].as<std::string>());
  int n = 0;
  for (const char* kind : {"StatefulSet", "Deployment", "DaemonSet"}) {
    for (const auto& w : by_kind_[kind]) {
      for (const auto& v : w["spec"]["template"]["spec"]["volumes"]) {
        ++n;
        if (v["secret"]) {
          EXPECT_TRUE(secrets_.count(v["secret"]["secretName"].as<std::string>()))
              << v["secret"]["secretName"];
        }
        if (v["persistentVolumeClaim"]) {
          EXPECT_TRUE(claims.count(v["persistentVolumeClaim"]["claimName"].as<std::string>()));
        }
      }
      for (const auto& c : w["spec"]["template"]["spec"]["containers"]) {
        EXPECT_TRUE(c["livenessProbe"]) << c["name"] << " has no liveness probe";
      }
    }
  }
  EXPECT_GE(n, 5);
  // Offline, kubectl can at least render the kustomization (its dry runs need an API server).
  if (sh("command -v kubectl").first == 0) {
    const auto [status, out] = sh("kubectl kustomize '" + k8s_.string() + "'");
    EXPECT_EQ(status, 0) << out;
    EXPECT_NE(out.find("image: registry.example.org/hylab:latest"), std::string::npos) << out;
  }
}

// The Slurm scripts run for real on this machine: the coordinator job publishes its
// endpoint, a worker started through workers.sbatch (a stand-in srun runs the task here)
// registers with CurveZMQ keys laid out as the README says, and `hylab workers` sees it.
TEST(SlurmScripts, CoordinatorAndWorkerJobsFindEachOther) {
  const std::string bin = env_or("HYLAB_BIN", "");
  if (bin.empty() || !fs::exists(bin)) GTEST_SKIP() << "HYLAB_BIN not set (run through ctest)";
  const fs::path slurm = fs::path(env_or("HYLAB_SOURCE_DIR", ".")) / "deploy" / "slurm";
  for (const char* s :
       {"coordinator.sbatch", "workers.sbatch", "workers-array.sbatch", "worker.sh"}) {
    const auto [status, out] = sh("bash -n '" + (slurm / s).string() + "'");
    EXPECT_EQ(status, 0) << s << ": " << out;
  }
  const fs::path shared = fs::temp_directory_path() / ("hylab_slurm_" + std::to_string(getpid()));
  fs::remove_all(shared);
  fs::create_directories(shared / "keys");
  fs::create_directories(shared / "fakebin");
  for (const char* k : {"coordinator", "worker", "me"}) {
    ASSERT_EQ(sh("'" + bin + "' keygen --out '" + (shared / "keys" / k).string() + "'").first, 0);
  }
  // A stand-in srun: runs the task command (its last argument) once, as Slurm would on one node.
  std::ofstream(shared / "fakebin" / "srun")
      << "#!/bin/sh\nfor a; do last=$a; done\nexec \"$last\"\n";
  fs::permissions(shared / "fakebin" / "srun", fs::perms::owner_all);
  std::mt19937 rng(static_cast<unsigned>(getpid()));
  const int port = 20000 + static_cast<int>(rng() % 20000);
  const std::string env = "HYLAB_SHARED='" + shared.string() + "' HYLAB='" + bin +
                          "' HYLAB_PORT=" + std::to_string(port) +
                          " HYLAB_ADVERTISE_HOST=127.0.0.1 HYLAB_WAIT_S=60 ";
  auto spawn = [&](const std::string& cmd, const std::string& log) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::setpgid(0, 0);
      ::execl("/bin/sh", "sh", "-c",
              ("exec env " + cmd + " >'" + (shared / log).string() + "' 2>&1").c_str(), nullptr);
      ::_exit(127);
    }
    return pid;
  };
  const pid_t coord =
      spawn(env + "bash '" + (slurm / "coordinator.sbatch").string() + "'", "coordinator.log");
  // Slurm's environment for a one-node task with no GPU allocated (a CPU worker here).
  const pid_t work =
      spawn(env + "PATH='" + (shared / "fakebin").string() + "':$PATH SLURM_JOB_ID=42 " +
                "SLURM_SUBMIT_DIR='" + fs::path(env_or("HYLAB_SOURCE_DIR", ".")).string() +
                "' CUDA_VISIBLE_DEVICES= bash '" + (slurm / "workers.sbatch").string() + "'",
            "workers.log");
  const fs::path endpoint = shared / "coordinator.endpoint";
  EXPECT_TRUE(wait_until([&] { return fs::exists(endpoint); }, 60))
      << slurp(shared / "coordinator.log");
  EXPECT_EQ(slurp(endpoint), "tcp://127.0.0.1:" + std::to_string(port) + "\n");
  std::string seen;
  const std::string ask =
      "'" + bin + "' workers --format csv --timeout_ms 3000 --coordinator tcp://127.0.0.1:" +
      std::to_string(port) + " --key '" + (shared / "keys" / "me.key").string() +
      "' --server_key '" + (shared / "keys" / "coordinator.pub").string() + "'";
  const bool registered = wait_until(
      [&] {
        seen = sh(ask).second;
        return seen.find(",alive,") != std::string::npos;
      },
      90);
  EXPECT_TRUE(registered) << seen << "\n--- coordinator\n"
                          << slurp(shared / "coordinator.log") << "\n--- workers\n"
                          << slurp(shared / "workers.log");
  EXPECT_NE(seen.find("-42,"), std::string::npos) << "worker id host-JOBID: " << seen;
  // CUDA_VISIBLE_DEVICES set but empty (no GPU allocated): a worker with 0 GPUs.
  EXPECT_NE(seen.find(",alive,0,"), std::string::npos) << seen;
  // Stopping the coordinator job removes its endpoint (no worker is sent to a dead node).
  ::kill(-coord, SIGTERM);
  int st = 0;
  ::waitpid(coord, &st, 0);  // the job script itself: it returns after its trap ran
  EXPECT_FALSE(fs::exists(endpoint));
  ::kill(-work, SIGKILL);
  ::waitpid(work, &st, 0);
  std::error_code ec;
  fs::remove_all(shared, ec);
}

}  // namespace
}  // namespace hylab
