# Fails if an ISA-specific object (*_avx2.cpp.o, *_avx512.cpp.o) defines a weak symbol.
# A weak symbol there is an inline function or template instantiated under AVX2/AVX-512 flags;
# the linker may pick that copy for every caller, which would then run AVX-512 code on CPUs
# without it. ISA files must use intrinsics and raw pointers only (see kernels/ops.h).
file(GLOB_RECURSE objs ${OBJ_DIR}/*_avx2.cpp.o ${OBJ_DIR}/*_avx512.cpp.o)
if(NOT objs)
  message(FATAL_ERROR "no ISA objects found under ${OBJ_DIR}")
endif()
set(bad "")
foreach(o IN LISTS objs)
  execute_process(COMMAND ${NM} -C ${o} OUTPUT_VARIABLE out RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "nm failed on ${o}")
  endif()
  string(REGEX MATCHALL "[^\n]* [WV] [^\n]*" weak "${out}")
  foreach(w IN LISTS weak)
    # DW.ref.__gxx_personality_v0 is unwind data, not code: harmless.
    if(NOT w MATCHES "DW\\.ref\\.")
      list(APPEND bad "${o}: ${w}")
    endif()
  endforeach()
endforeach()
if(bad)
  list(JOIN bad "\n" msg)
  message(FATAL_ERROR "weak symbols in ISA objects:\n${msg}")
endif()
list(LENGTH objs n)
message(STATUS "${n} ISA objects, no weak symbols")
