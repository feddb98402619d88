# node_cluster over real UDP and ZeroMQ sockets on loopback addresses.
shoal_test(test_node_cluster SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_node_cluster.c LIBS shoal_node_cluster TIMEOUT 60)
