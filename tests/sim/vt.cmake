# The virtual-time harness (sim/sim_world, sim/sim_cluster): ordering, determinism, faults.
shoal_test(test_sim_world SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_sim_world.c LIBS shoal_vt)
