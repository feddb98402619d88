# Peer protocol throughput: the transport against raw libzmq CURVE and NULL, in one run.
add_executable(bench_peer ${CMAKE_CURRENT_LIST_DIR}/peer/bench_peer.c)
target_link_libraries(bench_peer PRIVATE shoal_node_peer)
