# shoal_vt: the virtual-time harness (sim_world: clock, event queue, simulated network, one
# shoal_env per node; sim_cluster: N real gossip instances on it). Used by the tests and shoal-sim.
add_library(shoal_vt STATIC ${CMAKE_CURRENT_LIST_DIR}/sim_world.c ${CMAKE_CURRENT_LIST_DIR}/sim_cluster.c)
target_include_directories(shoal_vt PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(shoal_vt PUBLIC shoal_gossip shoal_common m)
