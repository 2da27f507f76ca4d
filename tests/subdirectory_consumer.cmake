# Configures, builds and installs tests/subdirectory (a parent project that
# add_subdirectory()s tokenless), then checks that the parent's install
# holds only its own program.
set(build ${WORK_DIR}/build)
set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${WORK_DIR})

include(${CMAKE_CURRENT_LIST_DIR}/cmake_run.cmake)

run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/subdirectory -B ${build} -G ${GENERATOR} -DTOKENLESS_SOURCE=${SOURCE_DIR})
run(${CMAKE_COMMAND} --build ${build})
run(${CMAKE_COMMAND} --install ${build} --prefix ${prefix})
foreach(unwanted include/tokenless lib/cmake/tokenless)
  if(EXISTS ${prefix}/${unwanted})
    message(FATAL_ERROR "the parent's install also installed tokenless: ${prefix}/${unwanted}")
  endif()
endforeach()
run(${prefix}/bin/parent_emu)
message(STATUS "add_subdirectory(tokenless): no CUDA language, no install, and the parent's program ran")
