# shoal-sim: the model against theory (library) and the program's contract (the real binary).
shoal_test(test_shoal_sim SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_shoal_sim.c LIBS shoal_simmodel m TIMEOUT 600)
target_compile_definitions(test_shoal_sim PRIVATE SHOAL_SIM_BIN="$<TARGET_FILE:shoal-sim>")
add_dependencies(test_shoal_sim shoal-sim)

# Against reality: the real three-node loopback cluster (scripts/demo) and shoal-sim on one
# workload; the predicted S3 GETs must be within 5 % of the real ones. Slow (it builds and runs the
# daemon, minutes), so it is registered only with -DSHOAL_SIM_REALITY=ON; it skips (77) when node
# or the AWS CLI is missing. By hand: tests/sim/against_reality.sh build/sim/shoal-sim
option(SHOAL_SIM_REALITY "Register the simulator-against-a-real-cluster check (slow)" OFF)
if(SHOAL_SIM_REALITY)
  add_test(NAME test_shoal_sim_predicts_real_cluster_s3_gets_within_5_percent
           COMMAND ${CMAKE_CURRENT_LIST_DIR}/against_reality.sh $<TARGET_FILE:shoal-sim>)
  set_tests_properties(test_shoal_sim_predicts_real_cluster_s3_gets_within_5_percent PROPERTIES
                       SKIP_RETURN_CODE 77 TIMEOUT 900 LABELS "reality" RUN_SERIAL TRUE)
endif()
