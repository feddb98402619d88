# shoal-sim: the model against theory (library) and the program's contract (the real binary).
shoal_test(test_shoal_sim SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_shoal_sim.c LIBS shoal_simmodel m TIMEOUT 600)
target_compile_definitions(test_shoal_sim PRIVATE SHOAL_SIM_BIN="$<TARGET_FILE:shoal-sim>")
add_dependencies(test_shoal_sim shoal-sim)
