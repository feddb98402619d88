# Cluster benchmarks (bench/cluster/run.py): real shoald processes on loopback and the local S3
# server; a script, not a program, because what it measures is whole daemons. `cmake --build
# <dir> --target bench_cluster` builds what it needs and runs it with that build.
add_custom_target(bench_cluster
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/cluster/run.py ${CMAKE_BINARY_DIR}
  DEPENDS shoald shoal
  USES_TERMINAL
  COMMENT "cluster benchmark: S3 requests per block and object on 5 nodes, shoal get vs cat, S3 GETs per block under churn")
