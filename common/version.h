// hylab's own version and the git commit it was built from (cmake/HylabVersionStamp.cmake
// writes the definitions at every build). The commit ends in "-dirty" when tracked files
// differed from it, and is "unknown" when the source tree was not a git checkout (configure
// with -DHYLAB_GIT_COMMIT=<hash> to record one then). Torch-free; see trainer/provenance.h for
// the library, GPU and host facts recorded with each trial.
#pragma once

namespace hylab {

const char* hylab_version();  // "0.1.0" (project(VERSION) in CMakeLists.txt)
const char* hylab_commit();   // "e9b77d8c1a2f", "e9b77d8c1a2f-dirty" or "unknown"

}  // namespace hylab
