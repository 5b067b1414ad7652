#include <chrono>

#include "common/metrics.h"

namespace hylab {

double unix_time_now() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

}  // namespace hylab
