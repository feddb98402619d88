# bench_gossip: gossip messages per member per period at 1,000 and 10,000 members (target ratio
# <= 1.1), on the virtual-time harness. Run by hand: build/bench/bench_gossip [periods] [seed].
add_executable(bench_gossip ${CMAKE_CURRENT_LIST_DIR}/gossip/bench_gossip.c)
target_link_libraries(bench_gossip PRIVATE shoal_vt)
