# Tests of the S3 client: XML parsing (pure), operations against the real local S3 server, and
# faults injected by tests/s3/faultproxy.py in front of it.
shoal_test(test_s3_xml SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_s3_xml.c LIBS shoal_s3)
shoal_test(test_s3_client SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_s3_client.c LIBS shoal_s3 LABELS s3rver)
shoal_test(test_s3_faults SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_s3_faults.c LIBS shoal_s3 LABELS s3rver)

# libFuzzer harness of the XML parsers (clang with -DSHOAL_FUZZ=ON only).
if(SHOAL_FUZZ)
  if(CMAKE_C_COMPILER_ID MATCHES "Clang")
    add_executable(fuzz_s3_xml ${CMAKE_CURRENT_LIST_DIR}/fuzz_s3_xml.c)
    target_compile_options(fuzz_s3_xml PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_options(fuzz_s3_xml PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(fuzz_s3_xml PRIVATE shoal_s3)
  else()
    message(STATUS "fuzz_s3_xml needs clang (libFuzzer); skipped with ${CMAKE_C_COMPILER_ID}")
  endif()
endif()
