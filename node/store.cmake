# The block store: blocks on disk under <cache-dir>/blocks/, checksummed, LRU-capped (docs/store.md).
add_library(shoal_node_store STATIC ${CMAKE_CURRENT_LIST_DIR}/node_store.c)
target_include_directories(shoal_node_store PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(shoal_node_store PUBLIC shoal_common PRIVATE shoal::xxhash Threads::Threads)
