# Against reality: a real four-node loopback cluster (shoald and shoal built here, the local S3
# server) and shoal-sim on the same workload, once without a failure and once with a node killed
# (SIGKILL) half way through its reads; predicted S3 GETs and HEADs must each be within 5 % of what
# the S3 server answered (with the kill: within the seeds' spread widened by 5 % for GETs, 10 % for HEADs). About 2 minutes of wall time, mostly real reads; its verdict is a count
# (the kill is placed by progress, and the simulated kill at the same share of the epoch), so the
# timeout only bounds a hung cluster: 10 x the measured time. Skips (77) when node or the AWS CLI
# is missing. By hand: tests/sim/against_reality.sh build/sim/shoal-sim build/node
add_test(NAME test_shoal_sim_predicts_real_cluster_s3_gets_and_heads_without_and_with_a_kill
         COMMAND ${CMAKE_CURRENT_LIST_DIR}/against_reality.sh $<TARGET_FILE:shoal-sim> $<TARGET_FILE_DIR:shoald>)
set_tests_properties(test_shoal_sim_predicts_real_cluster_s3_gets_and_heads_without_and_with_a_kill PROPERTIES
                     SKIP_RETURN_CODE 77 TIMEOUT 1200 LABELS "reality")
