# Placement benchmark: lookups per second at 1,000 members, R = 1 and R = 3, side by side.
add_executable(bench_dht ${CMAKE_CURRENT_LIST_DIR}/dht/bench_dht.c)
target_link_libraries(bench_dht PRIVATE shoal_dht)
