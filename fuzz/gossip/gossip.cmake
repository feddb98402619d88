# Fuzzing of the gossip decoder (and, through it, the state machine). Included from
# tests/gossip/CMakeLists.txt.
#
# fuzz_gossip_replay runs the harness over the seed corpus and every saved crash as an ordinary
# CTest case in every build. gossip_fuzz_corpus regenerates the corpus from a virtual cluster:
#   build/tests/gossip/gossip_fuzz_corpus fuzz/gossip/corpus
# With -DSHOAL_FUZZ=ON under clang, fuzz_gossip_decode is the libFuzzer binary:
#   build-fuzz/tests/gossip/fuzz_gossip_decode fuzz/gossip/corpus -max_total_time=300
set(shoal_fuzz_gossip_dir ${CMAKE_CURRENT_LIST_DIR})

add_executable(fuzz_gossip_replay ${shoal_fuzz_gossip_dir}/fuzz_gossip_decode.c ${shoal_fuzz_gossip_dir}/replay.c)
target_link_libraries(fuzz_gossip_replay PRIVATE shoal_vt)
shoal_private_headers(fuzz_gossip_replay shoal_gossip)
add_test(NAME test_gossip_fuzz_corpus_replays
         COMMAND fuzz_gossip_replay ${shoal_fuzz_gossip_dir}/corpus ${shoal_fuzz_gossip_dir}/crashes)
set_tests_properties(test_gossip_fuzz_corpus_replays PROPERTIES TIMEOUT 120)

add_executable(gossip_fuzz_corpus ${shoal_fuzz_gossip_dir}/gossip_corpus.c)
target_link_libraries(gossip_fuzz_corpus PRIVATE shoal_vt)
shoal_private_headers(gossip_fuzz_corpus shoal_gossip)

shoal_fuzz_target(fuzz_gossip_decode ${shoal_fuzz_gossip_dir}/fuzz_gossip_decode.c shoal_vt)
if(TARGET fuzz_gossip_decode)
  shoal_private_headers(fuzz_gossip_decode shoal_gossip)
endif()
