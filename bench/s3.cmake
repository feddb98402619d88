# The S3 client benchmark (bench/s3/): ranged-GET throughput beside awscli; run it with
# bench/s3/run.sh, which starts a local S3 server.
add_executable(shoal-bench-s3 ${CMAKE_CURRENT_LIST_DIR}/s3/bench_s3_get.c)
target_link_libraries(shoal-bench-s3 PRIVATE shoal_s3)
