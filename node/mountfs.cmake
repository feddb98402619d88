# The mount of shoald (--mount): fills fuse/'s object table with the daemon's parts.
# It sits below shoal_node_daemon, which calls it: this library links the parts it uses (the mount,
# S3, the store, membership, placement) but not shoal_node_daemon, and shoal_node_daemon links it.
# node_cache's functions, which it calls, come from shoal_node_daemon itself (node_cache.c is part
# of that library), so the two never form a cycle.
add_library(shoal_node_mountfs STATIC ${CMAKE_CURRENT_LIST_DIR}/node_mountfs.c)
target_include_directories(shoal_node_mountfs PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(shoal_node_mountfs PUBLIC shoal_mount shoal_node_cluster shoal_node_store shoal_node_peer
                      shoal_node_config shoal_s3 shoal_dht shoal_common PRIVATE shoal::xxhash Threads::Threads)
target_link_libraries(shoal_node_daemon PUBLIC shoal_node_mountfs)
