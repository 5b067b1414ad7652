// Device facts the trainer reports or saves: which device a rank uses, its name (for the MFU
// peak table), peak memory of the CUDA caching allocator, synchronisation for honest
// timings, and the random generators' state for checkpoints.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "common/run_config.h"

namespace hylab::trainer {

// config.device: auto -> CUDA if available, else CPU; cuda -> CUDA or an error. CUDA device
// index = local_rank modulo the visible devices. Throws hylab::ConfigError.
torch::Device pick_device(const RunConfig& resolved, int local_rank);

// True if the model runs under bf16 autocast: dtype bf16, or auto on CUDA. dtype bf16 on
// CPU is refused (ConfigError): CPU runs are fp32.
bool use_bf16_autocast(const RunConfig& resolved, const torch::Device& device);

std::string device_name(const torch::Device& device);  // "NVIDIA H200", "cpu"
void synchronize(const torch::Device& device);         // waits for queued CUDA work

// Times the phases of one step, each as the sum of its laps: on a CUDA device by events
// recorded on the current stream (the host does not wait between laps), elsewhere by the wall
// clock. mark() starts a lap; lap(phase) ends it (and starts the next). ms() waits for the
// last event and returns the per-phase sums.
class PhaseTimer {
 public:
  PhaseTimer(const torch::Device& device, int phases);
  ~PhaseTimer();
  PhaseTimer(const PhaseTimer&) = delete;
  PhaseTimer& operator=(const PhaseTimer&) = delete;
  void mark();
  void lap(int phase);
  std::vector<double> ms();

 private:
  void record(int phase);  // -1: a mark
  bool cuda_;
  std::vector<double> ms_;
  std::vector<int> phase_of_lap_;  // CUDA: per event, the phase it closes (-1: a mark)
  std::vector<void*> events_;      // cudaEvent_t, one per mark/lap
  std::chrono::steady_clock::time_point last_;
};

struct MemoryStats {
  double peak_allocated_gib = 0;
  double peak_reserved_gib = 0;
};
MemoryStats peak_memory(const torch::Device& device);  // zeros on CPU
void reset_peak_memory(const torch::Device& device);

// The default CPU generator and, on CUDA, the device's generator, as named uint8 tensors.
std::map<std::string, torch::Tensor> rng_state(const torch::Device& device);
void set_rng_state(const std::map<std::string, torch::Tensor>& state, const torch::Device& device);

// True if e is a CUDA out-of-memory error.
bool is_out_of_memory(const std::exception& e);

}  // namespace hylab::trainer
