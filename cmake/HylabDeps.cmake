# Finds every dependency the standard way (find_package + CMAKE_PREFIX_PATH), with the
# workarounds listed in ../shared/NOTES.md. Sets:
#   HYLAB_HAS_CUDA        nvcc found: kernels/ is compiled and linked
#   HYLAB_TORCH_HAS_CUDA  LibTorch was built with CUDA: the kernel glue and GPU tests build
#   HYLAB_HAS_NCCL        NCCL found (NCCL_INCLUDE_DIR, NCCL_LIBRARY)
include(CheckLanguage)

# --- LibTorch: a CUDA build when one is found, else Debian's libtorch-dev (1.13, CPU) ---
if(NOT Torch_DIR AND NOT DEFINED ENV{Torch_DIR})
  find_program(HYLAB_PYTHON3 python3)
  if(HYLAB_PYTHON3)
    execute_process(
      COMMAND ${HYLAB_PYTHON3} -c "import torch; print(torch.utils.cmake_prefix_path)"
      OUTPUT_VARIABLE _py_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET
      RESULT_VARIABLE _py_torch_rc)
    if(_py_torch_rc EQUAL 0 AND EXISTS "${_py_torch_prefix}/Torch")
      list(PREPEND CMAKE_PREFIX_PATH "${_py_torch_prefix}")
    endif()
  endif()
endif()

# CUDA first: a CUDA LibTorch's config wants the toolkit, and kernels/ wants nvcc.
set(HYLAB_HAS_CUDA OFF)
if(HYLAB_WITH_CUDA)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # sm_90 machine code for H100/H200 plus compute_90 PTX that newer GPUs JIT.
      set(CMAKE_CUDA_ARCHITECTURES "90-real;90-virtual")
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(HYLAB_HAS_CUDA ON)
  endif()
endif()

find_package(Torch REQUIRED)
set(HYLAB_TORCH_HAS_CUDA OFF)
if(TORCH_CUDA_LIBRARIES OR C10_CUDA_LIBRARY)
  set(HYLAB_TORCH_HAS_CUDA ON)
endif()
if(HYLAB_TORCH_HAS_CUDA AND NOT HYLAB_HAS_CUDA)
  message(WARNING "LibTorch has CUDA but nvcc was not found: the CUDA kernels are not built")
endif()
# TorchConfig appends its own flags (e.g. -D_GLIBCXX_USE_CXX11_ABI) to CMAKE_CXX_FLAGS; keep them.
set(CMAKE_CXX_FLAGS "${CMAKE_CXX_FLAGS} ${TORCH_CXX_FLAGS}")
# Torch's imported targets add -gencode flags for its own arch list to CUDA targets; ours
# come from CMAKE_CUDA_ARCHITECTURES (see kernels/CMakeLists.txt).

# --- NCCL: CUDA toolkit, system, or NCCL_ROOT ---
set(HYLAB_HAS_NCCL OFF)
if(HYLAB_HAS_CUDA OR HYLAB_TORCH_HAS_CUDA)
  find_path(NCCL_INCLUDE_DIR nccl.h
    HINTS ${NCCL_ROOT} $ENV{NCCL_ROOT} ${CUDAToolkit_INCLUDE_DIRS} PATH_SUFFIXES include)
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 NAMES_PER_DIR
    HINTS ${NCCL_ROOT} $ENV{NCCL_ROOT} ${CUDAToolkit_LIBRARY_DIR} PATH_SUFFIXES lib lib64)
  if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
    set(HYLAB_HAS_NCCL ON)
  endif()
endif()

# --- ZeroMQ + cppzmq: find_path/find_library (libzmq's pkg-config lists private deps
# that GPU hosts lack; see NOTES.md) ---
find_path(ZMQ_INCLUDE_DIR zmq.h REQUIRED)
find_path(CPPZMQ_INCLUDE_DIR zmq.hpp REQUIRED)
find_library(ZMQ_LIBRARY NAMES zmq REQUIRED)
add_library(hylab_zmq INTERFACE)
target_include_directories(hylab_zmq SYSTEM INTERFACE ${ZMQ_INCLUDE_DIR} ${CPPZMQ_INCLUDE_DIR})
target_link_libraries(hylab_zmq INTERFACE ${ZMQ_LIBRARY})

# --- Protobuf: link ${Protobuf_LIBRARIES}, not protobuf::libprotobuf (CMake 4 drops it) ---
find_package(Protobuf REQUIRED)

# --- SQLite: SQLite3::SQLite3 on CMake 4, SQLite::SQLite3 on 3.25 ---
find_package(SQLite3 REQUIRED)
add_library(hylab_sqlite INTERFACE)
if(TARGET SQLite3::SQLite3)
  target_link_libraries(hylab_sqlite INTERFACE SQLite3::SQLite3)
else()
  target_link_libraries(hylab_sqlite INTERFACE SQLite::SQLite3)
endif()

find_package(Threads REQUIRED)
find_package(spdlog REQUIRED)
find_package(CLI11 REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(nlohmann_json REQUIRED)

# --- sentencepiece: no CMake package; header + library ---
find_path(SENTENCEPIECE_INCLUDE_DIR sentencepiece_processor.h REQUIRED)
find_library(SENTENCEPIECE_LIBRARY NAMES sentencepiece REQUIRED)
find_library(SENTENCEPIECE_TRAIN_LIBRARY NAMES sentencepiece_train REQUIRED)
add_library(hylab_sentencepiece INTERFACE)
target_include_directories(hylab_sentencepiece SYSTEM INTERFACE ${SENTENCEPIECE_INCLUDE_DIR})
target_link_libraries(hylab_sentencepiece INTERFACE ${SENTENCEPIECE_TRAIN_LIBRARY} ${SENTENCEPIECE_LIBRARY})

# --- cpp-httplib: no CMake package; must be compiled with the defines its library was
# built with, or the client corrupts memory (NOTES.md) ---
find_path(HTTPLIB_INCLUDE_DIR httplib.h)
find_library(HTTPLIB_LIBRARY NAMES cpp-httplib)
if(HTTPLIB_INCLUDE_DIR AND HTTPLIB_LIBRARY)
  add_library(hylab_httplib INTERFACE)
  target_include_directories(hylab_httplib SYSTEM INTERFACE ${HTTPLIB_INCLUDE_DIR})
  target_compile_definitions(hylab_httplib INTERFACE
    CPPHTTPLIB_OPENSSL_SUPPORT CPPHTTPLIB_ZLIB_SUPPORT CPPHTTPLIB_BROTLI_SUPPORT)
  target_link_libraries(hylab_httplib INTERFACE ${HTTPLIB_LIBRARY})
endif()

if(HYLAB_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
