// Internal to trainer/dist*.cpp: the c10d key-value store every backend rendezvouses
// through, and the init barrier with its deadline.
#pragma once

#include <torch/csrc/distributed/c10d/Store.hpp>

#include "trainer/dist.h"

namespace hylab::trainer {

// FileStore at env.rendezvous_file, else TCPStore at master_addr:master_port (rank 0 serves).
c10::intrusive_ptr<c10d::Store> make_store(const DistEnv& env);

// Every rank checks in under `key`; returns once all env.world ranks have, or throws
// hylab::Error after env.init_timeout naming how many arrived.
void wait_for_all_ranks(c10d::Store& store, const DistEnv& env, const std::string& key);

}  // namespace hylab::trainer
