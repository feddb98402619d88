# Block store reads (bench/store/): warm random and sequential reads with whole-block verification,
# chunk verification and a plain pread, in one run: build/bench/bench_store.
add_executable(bench_store ${CMAKE_CURRENT_LIST_DIR}/store/bench_store.c)
target_link_libraries(bench_store PRIVATE shoal_node_store)
