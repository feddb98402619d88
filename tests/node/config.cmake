# Tests of node/config.cmake: configuration, counters, control socket, metrics, the shoal CLI.
shoal_test(test_node_config SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_node_config.c LIBS shoal_node_config
           LABELS node TIMEOUT 60)

shoal_test(test_node_control SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_node_control.c LIBS shoal_node_config
           LABELS node TIMEOUT 60)
target_compile_definitions(test_node_control PRIVATE SHOAL_CLI_PATH="$<TARGET_FILE:shoal>")
add_dependencies(test_node_control shoal)

shoal_test(test_node_json SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_node_json.c LIBS shoal_node_config LABELS node)
