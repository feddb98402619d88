# The read path in one process through its dependency table: real stores and peer transports,
# S3 and placement faked (tests/node/test_node_cache.c says why).
shoal_test(test_node_cache SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_node_cache.c
           LIBS shoal_node_cache shoal::zmq Threads::Threads LABELS node TIMEOUT 60)
