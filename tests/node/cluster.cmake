# node_cluster over real UDP and ZeroMQ sockets on loopback addresses.
shoal_test(test_node_cluster SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_node_cluster.c LIBS shoal_node_cluster TIMEOUT 60)
# node_seeds (lazy seed resolution through the system resolver, the members file) and node_gossip_watch
# (a wrong key in the logs) as units, the watch on a virtual clock.
shoal_test(test_node_seeds SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_node_seeds.c LIBS shoal_node_cluster TIMEOUT 60)
