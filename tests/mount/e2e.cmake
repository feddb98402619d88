# The mount end to end: real shoald daemons with --mount (the daemon tests' harness starts them),
# real FUSE mounts, the real local S3 server, awscli as the other client.
shoal_test(test_mount_e2e SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_mount_e2e.c
           ${PROJECT_SOURCE_DIR}/tests/node/test_daemon_harness.c
           LIBS shoal_node_config shoal_s3 Threads::Threads LABELS mount e2e TIMEOUT 120)
target_include_directories(test_mount_e2e PRIVATE ${PROJECT_SOURCE_DIR}/tests/node)
target_compile_definitions(test_mount_e2e PRIVATE SHOALD_PATH="$<TARGET_FILE:shoald>"
                           SHOAL_CLI_PATH="$<TARGET_FILE:shoal>")
add_dependencies(test_mount_e2e shoald shoal)
