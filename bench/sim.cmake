# bench_sim: shoal-sim at 1,000 and 10,000 nodes side by side (wall time, peak memory, gossip load
# per node and its ratio, death dissemination). Run by hand: build/bench/bench_sim [s] [n1] [n2].
add_executable(bench_sim ${CMAKE_CURRENT_LIST_DIR}/sim/bench_sim.c)
target_link_libraries(bench_sim PRIVATE shoal_simmodel m)
