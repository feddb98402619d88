# node/config.cmake: configuration, counters, the control socket, the metrics endpoint, and the
# `shoal` command-line client built on them.
add_library(shoal_node_config STATIC
  ${CMAKE_CURRENT_LIST_DIR}/node_config.c
  ${CMAKE_CURRENT_LIST_DIR}/node_stats.c
  ${CMAKE_CURRENT_LIST_DIR}/node_control.c
  ${CMAKE_CURRENT_LIST_DIR}/node_metrics.c)
target_include_directories(shoal_node_config PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(shoal_node_config PUBLIC shoal_common shoal::inih shoal::mhd shoal::sodium shoal::jsonc Threads::Threads)

add_executable(shoal ${CMAKE_CURRENT_LIST_DIR}/shoal_cli.c)
target_link_libraries(shoal PRIVATE shoal_node_config)
install(TARGETS shoal)
