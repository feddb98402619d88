# Tests of the block store (node/node_store.c): real files in a temporary directory.
shoal_test(test_node_store SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_node_store.c
           LIBS shoal_node_store Threads::Threads LABELS node store)
