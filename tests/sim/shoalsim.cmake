# shoal-sim: the model against theory (library) and the program's contract (the real binary).
shoal_test(test_shoal_sim SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_shoal_sim.c LIBS shoal_simmodel m TIMEOUT 600)
target_compile_definitions(test_shoal_sim PRIVATE SHOAL_SIM_BIN="$<TARGET_FILE:shoal-sim>")
add_dependencies(test_shoal_sim shoal-sim)
# The 1,000-node detection test runs 150 crashes in 400 simulated seconds: 10 s of CPU (26 s under
# ASan, gcc 12); its verdict is in virtual time, so only the wall-clock timeout could fail it under
# load (172 s wall under ASan with `stress-ng --cpu 2` and ctest -j2 on 2 cores). 40 x the
# sanitized CPU time, as for test_gossip_thousand_nodes_converge.
set_tests_properties(test_shoal_sim_first_detection_takes_e_over_e_minus_1_periods_at_1000_nodes
                     PROPERTIES TIMEOUT 1200 LABELS scale)
# The data path against shoald's behaviour, and the throughput model on hand-computed cases.
shoal_test(test_sim_datapath SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_sim_datapath.c LIBS shoal_simmodel m)
