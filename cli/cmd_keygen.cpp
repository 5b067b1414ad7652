// `hylab keygen --out NAME`: a CurveZMQ key pair for the coordinator, a worker or a client.
#include <cstdio>

#include "cli/command.h"
#include "wire/security.h"

namespace hylab::cli {
namespace {

void setup(CLI::App& root) {
  auto* cmd = root.add_subcommand("keygen", "Make a CurveZMQ key pair: NAME.key (secret) and NAME.pub");
  auto out = std::make_shared<std::string>();
  cmd->add_option(flag("out"), *out, "Path prefix NAME: writes NAME.key (mode 0600) and NAME.pub")->required();
  cmd->footer(
      "The coordinator runs with --key coordinator.key --allow FILE, where FILE lists the public keys\n"
      "(or is a folder of *.pub files) of every worker and client; workers and clients run with\n"
      "--key NAME.key --server_key coordinator.pub.");
  cmd->callback([out] {
    const wire::KeyPair kp = wire::generate_keypair();
    wire::write_keypair(kp, *out);
    std::printf("wrote %s.key (secret) and %s.pub\npublic key: %s\n", out->c_str(), out->c_str(),
                kp.public_z85.c_str());
  });
}

HYLAB_REGISTER_COMMAND("keygen", 80, setup);

}  // namespace
}  // namespace hylab::cli
