# Against reality: a real four-node loopback cluster (scripts/demo with the shoald and shoal built
# here, no mounts) and shoal-sim on one workload; the predicted S3 GETs must be within 5 % of the
# GETs the S3 server answered. About 20 s; skips (77) when node or the AWS CLI is missing.
# By hand: tests/sim/against_reality.sh build/sim/shoal-sim build/node
add_test(NAME test_shoal_sim_predicts_real_cluster_s3_gets_within_5_percent
         COMMAND ${CMAKE_CURRENT_LIST_DIR}/against_reality.sh $<TARGET_FILE:shoal-sim> $<TARGET_FILE_DIR:shoald>)
set_tests_properties(test_shoal_sim_predicts_real_cluster_s3_gets_within_5_percent PROPERTIES
                     SKIP_RETURN_CODE 77 TIMEOUT 300 LABELS "reality")
