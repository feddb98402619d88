# Tests of shoald end to end: real daemons (fork/exec of the built shoald) on loopback addresses of
# their own, the real local S3 server, reads through the control socket.
shoal_test(test_daemon SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_daemon.c ${CMAKE_CURRENT_LIST_DIR}/test_daemon_harness.c
           LIBS shoal_node_config shoal_node_peer shoal_dht shoal_s3 shoal::zmq shoal::xxhash Threads::Threads
           LABELS node daemon TIMEOUT 120)
target_compile_definitions(test_daemon PRIVATE SHOALD_PATH="$<TARGET_FILE:shoald>" SHOAL_CLI_PATH="$<TARGET_FILE:shoal>"
                           SHOAL_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
add_dependencies(test_daemon shoald shoal)

# The block store under a misbehaving disk, end to end (blocks directory removed, a disk smaller
# than --cache-size, damaged block files).
shoal_test(test_daemon_store SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_daemon_store.c ${CMAKE_CURRENT_LIST_DIR}/test_daemon_harness.c
           LIBS shoal_node_config shoal_node_peer shoal_dht shoal_s3 Threads::Threads
           LABELS node daemon store TIMEOUT 240)
target_compile_definitions(test_daemon_store PRIVATE SHOALD_PATH="$<TARGET_FILE:shoald>" SHOAL_CLI_PATH="$<TARGET_FILE:shoal>")
add_dependencies(test_daemon_store shoald shoal)

# Membership across restarts (remembered members, seeds that resolve late, forget) and the
# mistakes made visible (a wrong cluster key), with real daemons.
shoal_test(test_daemon_membership SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_daemon_membership.c
           ${CMAKE_CURRENT_LIST_DIR}/test_daemon_harness.c
           LIBS shoal_node_config shoal_s3 Threads::Threads LABELS node daemon TIMEOUT 120)
target_compile_definitions(test_daemon_membership PRIVATE SHOALD_PATH="$<TARGET_FILE:shoald>"
                           SHOAL_CLI_PATH="$<TARGET_FILE:shoal>")
add_dependencies(test_daemon_membership shoald shoal)

# Slow owners and stalled S3 answers (the fault proxy between a daemon and the server).
shoal_test(test_daemon_progress SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_daemon_progress.c
           ${CMAKE_CURRENT_LIST_DIR}/test_daemon_harness.c
           LIBS shoal_node_config shoal_node_peer shoal_dht shoal_s3 Threads::Threads
           LABELS node daemon TIMEOUT 120)
target_compile_definitions(test_daemon_progress PRIVATE SHOALD_PATH="$<TARGET_FILE:shoald>"
                           SHOAL_CLI_PATH="$<TARGET_FILE:shoal>")
add_dependencies(test_daemon_progress shoald shoal)

# Cooperative metadata: five daemons, one HEAD per object for the cluster.
shoal_test(test_daemon_metadata SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_daemon_metadata.c
           ${CMAKE_CURRENT_LIST_DIR}/test_daemon_harness.c
           LIBS shoal_node_config shoal_node_peer shoal_dht shoal_s3 Threads::Threads
           LABELS node daemon TIMEOUT 300)
target_compile_definitions(test_daemon_metadata PRIVATE SHOALD_PATH="$<TARGET_FILE:shoald>"
                           SHOAL_CLI_PATH="$<TARGET_FILE:shoal>")
add_dependencies(test_daemon_metadata shoald shoal)

# shoald when membership changes: scale-out, drain, kill with replicas, SIGTERM, preload's report.
shoal_test(test_daemon_churn SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_daemon_churn.c ${CMAKE_CURRENT_LIST_DIR}/test_daemon_harness.c
           LIBS shoal_node_config shoal_node_peer shoal_dht shoal_s3 shoal::zmq shoal::xxhash Threads::Threads
           LABELS node daemon TIMEOUT 300)
target_compile_definitions(test_daemon_churn PRIVATE SHOALD_PATH="$<TARGET_FILE:shoald>" SHOAL_CLI_PATH="$<TARGET_FILE:shoal>")
add_dependencies(test_daemon_churn shoald shoal)

# The shoal client against real daemons: status across members, stats over an interval, per-command
# help, ls names as `aws s3 ls` prints them.
shoal_test(test_daemon_cli SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_daemon_cli.c ${CMAKE_CURRENT_LIST_DIR}/test_daemon_harness.c
           LIBS shoal_node_config shoal_node_peer shoal_dht shoal_s3 Threads::Threads
           LABELS node daemon TIMEOUT 180)
target_compile_definitions(test_daemon_cli PRIVATE SHOALD_PATH="$<TARGET_FILE:shoald>" SHOAL_CLI_PATH="$<TARGET_FILE:shoal>")
add_dependencies(test_daemon_cli shoald shoal)
