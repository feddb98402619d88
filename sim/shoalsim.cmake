# shoal_simmodel: the simulator's model (cluster model, data path, S3 and prices, churn, reports)
# on top of the virtual-time harness; shoal-sim: its command line (SPEC.md section 5).
add_library(shoal_simmodel STATIC
  ${CMAKE_CURRENT_LIST_DIR}/sim_model.c
  ${CMAKE_CURRENT_LIST_DIR}/sim_spec.c
  ${CMAKE_CURRENT_LIST_DIR}/sim_lru.c
  ${CMAKE_CURRENT_LIST_DIR}/sim_pace.c
  ${CMAKE_CURRENT_LIST_DIR}/sim_report.c)
target_include_directories(shoal_simmodel PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(shoal_simmodel PUBLIC shoal_vt shoal_dht shoal_gossip shoal_common m)

add_executable(shoal-sim ${CMAKE_CURRENT_LIST_DIR}/shoal_sim.c)
target_link_libraries(shoal-sim PRIVATE shoal_simmodel)
install(TARGETS shoal-sim)
