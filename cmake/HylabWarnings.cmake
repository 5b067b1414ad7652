# Warnings on for our own code only (third-party headers are included as SYSTEM).
function(hylab_target_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers>
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall>)
endfunction()

# Libraries that include <torch/torch.h> share one precompiled header each: the header
# dominates compile time on small machines (CI has 2 cores).
function(hylab_torch_library target)
  target_link_libraries(${target} PUBLIC ${TORCH_LIBRARIES})
  # A pip LibTorch ships its own (older) google/protobuf headers inside its include dir; our
  # protobuf's headers must be found first, or config.pb.h fails to compile next to torch.
  if(Protobuf_INCLUDE_DIRS)
    target_include_directories(${target} SYSTEM BEFORE PUBLIC ${Protobuf_INCLUDE_DIRS})
  endif()
  target_include_directories(${target} SYSTEM PUBLIC ${TORCH_INCLUDE_DIRS})
  target_precompile_headers(${target} PRIVATE <torch/torch.h>)
  # pip LibTorch 2.x exports the std::filesystem symbols of a statically linked libstdc++
  # (pytorch/pytorch#133437). Executables that link LibTorch then bind our std::filesystem
  # calls to that copy, which crashed next to the system libstdc++ on the GPU host. Naming
  # libstdc++ first on the link line makes it the first library searched for those symbols.
  target_link_options(${target} INTERFACE
    "LINKER:--push-state,--no-as-needed" "-lstdc++" "LINKER:--pop-state")
endfunction()
