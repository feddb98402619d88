# The mount end to end: real shoald daemons with --mount (the daemon tests' harness starts them),
# real FUSE mounts, the real local S3 server.

# shoal_mount_e2e_test(<exe> <source> <timeout>): a test program over the daemon harness.
function(shoal_mount_e2e_test exe src timeout)
  shoal_test(${exe} SOURCES ${CMAKE_CURRENT_LIST_DIR}/${src}
             ${PROJECT_SOURCE_DIR}/tests/node/test_daemon_harness.c
             LIBS shoal_node_config shoal_s3 Threads::Threads LABELS mount e2e TIMEOUT ${timeout})
  target_include_directories(${exe} PRIVATE ${PROJECT_SOURCE_DIR}/tests/node)
  target_compile_definitions(${exe} PRIVATE SHOALD_PATH="$<TARGET_FILE:shoald>"
                             SHOAL_CLI_PATH="$<TARGET_FILE:shoal>")
  add_dependencies(${exe} shoald shoal)
endfunction()

# awscli is the other client where the cases need one.
# 900 s: the warm-epoch case uploads 3,000 files and reads them four times on two nodes (about 90 s on
# an idle machine; its cold epoch alone took 265 s under a load average of 40 on two cores).
shoal_mount_e2e_test(test_mount_e2e test_mount_e2e.c 900)
# Everyday tools (rsync -a, tar x, cp -a, git clone) writing into the mount.
shoal_mount_e2e_test(test_mount_tools test_mount_tools.c 300)
