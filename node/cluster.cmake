# node_cluster: gossip's real UDP driver and the membership snapshots the read path uses; node_seeds:
# where a node finds its cluster; node_gossip_watch: a wrong cluster key made visible in the logs.
add_library(shoal_node_cluster STATIC ${CMAKE_CURRENT_LIST_DIR}/node_cluster.c ${CMAKE_CURRENT_LIST_DIR}/node_seeds.c
            ${CMAKE_CURRENT_LIST_DIR}/node_gossip_watch.c)
target_include_directories(shoal_node_cluster PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(shoal_node_cluster PUBLIC shoal_gossip shoal_dht shoal_node_peer shoal_node_config
                      shoal_common Threads::Threads)
