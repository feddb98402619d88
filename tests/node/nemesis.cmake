# The nemesis test: five real daemons in network namespaces of their own, readers verifying every
# byte on every node while a seeded schedule kills, stops and partitions nodes (needs root for the
# namespaces; skipped otherwise).
shoal_test(test_nemesis SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_nemesis.c ${CMAKE_CURRENT_LIST_DIR}/test_daemon_harness.c
           LIBS shoal_node_config shoal_node_peer shoal_dht shoal_s3 shoal::zmq shoal::xxhash Threads::Threads
           LABELS node daemon nemesis TIMEOUT 1800)
target_compile_definitions(test_nemesis PRIVATE SHOALD_PATH="$<TARGET_FILE:shoald>" SHOAL_CLI_PATH="$<TARGET_FILE:shoal>")
add_dependencies(test_nemesis shoald shoal)
