# Installs the build tree to a temporary prefix, then configures, builds and
# runs examples/consumer against it with find_package(tokenless CONFIG).
set(prefix ${WORK_DIR}/prefix)
set(build ${WORK_DIR}/build)
file(REMOVE_RECURSE ${WORK_DIR})

include(${CMAKE_CURRENT_LIST_DIR}/cmake_run.cmake)

run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/consumer -B ${build} -G ${GENERATOR} -DCMAKE_PREFIX_PATH=${prefix}
    -DCONSUMER_WITH_CUDA=${CUDA})
run(${CMAKE_COMMAND} --build ${build})
run(${build}/consumer_emu)
# A consumer of the headers and tokenless::emu needs no CUDA toolkit.
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/consumer -B ${build}_no_cuda -G ${GENERATOR} -DCMAKE_PREFIX_PATH=${prefix}
    -DCONSUMER_WITH_CUDA=OFF -DCMAKE_DISABLE_FIND_PACKAGE_CUDAToolkit=TRUE)
run(${CMAKE_COMMAND} --build ${build}_no_cuda)
run(${build}_no_cuda/consumer_emu)
message(STATUS "consumer built against the installed package and ran")
