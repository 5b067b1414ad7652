// What every book (worker_book.h, trial_book.h, sweep_book.h) shares with the driver,
// Coordinator::Impl: the options, the database and the rate limit on log lines that peers
// can provoke. The books write rows through `store` while step()'s transaction is open
// (coordinator_impl.h says why rows are not returned effects). Not owned; outlives the books.
#pragma once

#include "common/log_limit.h"
#include "coordinator/coordinator.h"
#include "store/store.h"

namespace hylab::coordinator {

struct BookEnv {
  const CoordinatorOptions& opt;
  store::Store& store;
  LogLimit& log_limit;
};

}  // namespace hylab::coordinator
