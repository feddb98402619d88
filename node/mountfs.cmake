# The mount of shoald (--mount): fills fuse/'s object table with the daemon's parts. It calls the
# read path (shoal_node_cache) and is called by the daemon (shoal_node_daemon): a chain, no cycle.
add_library(shoal_node_mountfs STATIC ${CMAKE_CURRENT_LIST_DIR}/node_mountfs.c)
target_include_directories(shoal_node_mountfs PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(shoal_node_mountfs PUBLIC shoal_mount shoal_node_cache shoal_node_cluster shoal_node_store
                      shoal_node_peer shoal_node_config shoal_s3 shoal_dht shoal_common
                      PRIVATE shoal::xxhash Threads::Threads)
