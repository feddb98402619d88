# The read path (node_cache*.c): a library of its own below the mount glue and the daemon, which
# both call it, so no two libraries call each other.
add_library(shoal_node_cache STATIC ${CMAKE_CURRENT_LIST_DIR}/node_cache.c ${CMAKE_CURRENT_LIST_DIR}/node_cache_fetch.c
            ${CMAKE_CURRENT_LIST_DIR}/node_cache_meta.c ${CMAKE_CURRENT_LIST_DIR}/node_cache_serve.c
            ${CMAKE_CURRENT_LIST_DIR}/node_cache_drain.c)
target_include_directories(shoal_node_cache PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(shoal_node_cache PUBLIC shoal_node_cluster shoal_node_store shoal_node_peer shoal_node_config
                      shoal_s3 shoal_dht shoal_common PRIVATE shoal::xxhash Threads::Threads)

# The daemon: the wiring of every part (node_daemon.c) and shoald.
add_library(shoal_node_daemon STATIC ${CMAKE_CURRENT_LIST_DIR}/node_daemon.c)
target_include_directories(shoal_node_daemon PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(shoal_node_daemon PUBLIC shoal_node_cache shoal_node_mountfs shoal_node_cluster shoal_node_store
                      shoal_node_peer shoal_node_config shoal_s3 shoal_dht shoal_gossip shoal_common
                      PRIVATE shoal::xxhash shoal::systemd Threads::Threads)

add_executable(shoald ${CMAKE_CURRENT_LIST_DIR}/shoald.c)
target_link_libraries(shoald PRIVATE shoal_node_daemon)
install(TARGETS shoald)
