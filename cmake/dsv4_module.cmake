# dsv4_module(NAME DEPS ...): a static library dsv4_<NAME> from src/<NAME>/**.cpp.
# Files named *_avx2.cpp get AVX2+FMA flags, *_avx512.cpp get AVX-512 (F/BW/VL/DQ +
# VNNI + BF16) flags; everything else is built for DSV4_BASE_ARCH. Kernels in ISA files
# must only be called after a run-time CPU check (src/kernels/dispatch.h).
function(dsv4_module name)
  file(GLOB_RECURSE srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cpp)
  if(NOT srcs)
    add_library(dsv4_${name} INTERFACE)
    target_link_libraries(dsv4_${name} INTERFACE dsv4_options ${ARGN})
    return()
  endif()
  add_library(dsv4_${name} STATIC ${srcs})
  target_link_libraries(dsv4_${name} PUBLIC dsv4_options ${ARGN})
  foreach(f IN LISTS srcs)
    if(f MATCHES "_avx512\\.cpp$")
      set_source_files_properties(${f} PROPERTIES COMPILE_OPTIONS
        "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni;-mavx512bf16;-mfma;-mf16c")
    elseif(f MATCHES "_avx2\\.cpp$")
      set_source_files_properties(${f} PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
    endif()
  endforeach()
endfunction()

# dsv4_test(MODULE LIBS...): one GoogleTest binary per test folder, tests/<MODULE>/*_test.cpp.
# Files named *_slow_test.cpp go into a second binary whose tests carry the CTest label `slow`
# (excluded from ./scripts/test; run with ./scripts/test --slow).
function(dsv4_test module)
  file(GLOB fast CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${module}/*_test.cpp)
  file(GLOB slow CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${module}/*_slow_test.cpp)
  if(slow)
    list(REMOVE_ITEM fast ${slow})
  endif()
  foreach(kind IN ITEMS fast slow)
    if(NOT ${kind})
      continue()
    endif()
    set(exe ${module}_test)
    if(kind STREQUAL "slow")
      set(exe ${module}_slow_test)
    endif()
    add_executable(${exe} ${${kind}})
    target_link_libraries(${exe} PRIVATE ${ARGN} GTest::gtest GTest::gtest_main GTest::gmock)
    target_compile_definitions(${exe} PRIVATE
      DSV4_TEST_DATA_DIR="${PROJECT_SOURCE_DIR}/tests/data"
      DSV4_BINARY_DIR="${PROJECT_BINARY_DIR}")
    if(kind STREQUAL "slow")
      gtest_discover_tests(${exe} DISCOVERY_TIMEOUT 60 PROPERTIES LABELS slow TIMEOUT 3600)
    else()
      gtest_discover_tests(${exe} DISCOVERY_TIMEOUT 60 PROPERTIES LABELS unit TIMEOUT 600)
    endif()
  endforeach()
endfunction()
