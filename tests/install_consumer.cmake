# Installs the build tree to a temporary prefix, then configures, builds and
# runs examples/consumer against it with find_package(tokenless CONFIG).
set(prefix ${WORK_DIR}/prefix)
set(build ${WORK_DIR}/build)
file(REMOVE_RECURSE ${WORK_DIR})

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}")
  endif()
endfunction()

run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/consumer -B ${build} -G ${GENERATOR} -DCMAKE_PREFIX_PATH=${prefix}
    -DCONSUMER_WITH_CUDA=${CUDA})
run(${CMAKE_COMMAND} --build ${build})
run(${build}/consumer_emu)
message(STATUS "consumer built against the installed package and ran")
