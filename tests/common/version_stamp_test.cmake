# cmake -P test of cmake/HylabVersionStamp.cmake: outside a git checkout (also a folder
# inside another checkout, as a source tarball unpacked there) the commit is
# "unknown", a configured HYLAB_GIT_COMMIT wins, inside the checkout it is HEAD's hash, and
# an unchanged stamp is not rewritten (so builds without new commits relink nothing).
#   -DSCRIPT=<stamp script> -DREPO=<source dir> -DWORK=<scratch dir>
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/not-a-checkout)
function(stamp src commit out)
  execute_process(COMMAND ${CMAKE_COMMAND} -DSRC=${src} -DOUT=${out} -DVERSION=9.8.7
                          -DCOMMIT=${commit} -P ${SCRIPT} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "stamp script failed: ${rc}")
  endif()
endfunction()
function(expect file needle)
  file(READ ${file} text)
  string(FIND "${text}" "${needle}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "${file} lacks ${needle}:\n${text}")
  endif()
endfunction()

stamp(${WORK}/not-a-checkout "" ${WORK}/a.cpp)
expect(${WORK}/a.cpp "hylab_commit() { return \"unknown\"; }")
expect(${WORK}/a.cpp "hylab_version() { return \"9.8.7\"; }")
stamp(${WORK}/not-a-checkout "0123abcd" ${WORK}/b.cpp)
expect(${WORK}/b.cpp "return \"0123abcd\"")

find_program(GIT git)
if(GIT)
  execute_process(COMMAND ${GIT} -C ${REPO} rev-parse --short=12 HEAD OUTPUT_VARIABLE head
                  RESULT_VARIABLE rc OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(rc EQUAL 0)
    stamp(${REPO} "" ${WORK}/c.cpp)
    expect(${WORK}/c.cpp "return \"${head}")
    file(TIMESTAMP ${WORK}/c.cpp before "%s")
    execute_process(COMMAND ${CMAKE_COMMAND} -E sleep 1.1)
    stamp(${REPO} "" ${WORK}/c.cpp)
    file(TIMESTAMP ${WORK}/c.cpp after "%s")
    if(NOT before STREQUAL after)
      message(FATAL_ERROR "an unchanged stamp was rewritten (${before} -> ${after})")
    endif()
  endif()
endif()
file(REMOVE_RECURSE ${WORK})
message(STATUS "version stamp: ok")
