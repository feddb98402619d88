# shoal-sim: the model against theory (library) and the program's contract (the real binary).
shoal_test(test_shoal_sim SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_shoal_sim.c LIBS shoal_simmodel m TIMEOUT 600)
target_compile_definitions(test_shoal_sim PRIVATE SHOAL_SIM_BIN="$<TARGET_FILE:shoal-sim>")
add_dependencies(test_shoal_sim shoal-sim)

# Against reality: the real three-node loopback cluster (scripts/demo) and shoal-sim on one
# workload; the predicted S3 GETs must be within 5 % of the real ones. Slow (it builds and runs the
# daemon), so it carries the label "reality"; it skips (77) when node or the AWS CLI is missing.
add_test(NAME test_shoal_sim_predicts_real_cluster_s3_gets_within_5_percent
         COMMAND ${CMAKE_CURRENT_LIST_DIR}/against_reality.sh $<TARGET_FILE:shoal-sim>)
set_tests_properties(test_shoal_sim_predicts_real_cluster_s3_gets_within_5_percent PROPERTIES
                     SKIP_RETURN_CODE 77 TIMEOUT 900 LABELS "reality" RUN_SERIAL TRUE)
