# Fuzzing of the peer-message decoder. Included from tests/node/CMakeLists.txt.
#
# fuzz_peer_replay runs the harness over the seed corpus and every saved crash as an ordinary
# CTest case in every build. With -DSHOAL_FUZZ=ON under clang, fuzz_peer_decode is the libFuzzer
# binary, linked with the codec's library as the tests are (a fuzzing build instruments every
# library):
#   build-fuzz/tests/node/fuzz_peer_decode fuzz/peer/corpus -max_total_time=300
set(shoal_fuzz_peer_dir ${CMAKE_CURRENT_LIST_DIR})

add_executable(fuzz_peer_replay ${shoal_fuzz_peer_dir}/fuzz_peer_decode.c ${shoal_fuzz_peer_dir}/replay.c)
target_link_libraries(fuzz_peer_replay PRIVATE shoal_node_peer_proto)
add_test(NAME test_node_peer_fuzz_corpus_replays
         COMMAND fuzz_peer_replay ${shoal_fuzz_peer_dir}/corpus ${shoal_fuzz_peer_dir}/crashes)
set_tests_properties(test_node_peer_fuzz_corpus_replays PROPERTIES TIMEOUT 120)

shoal_fuzz_target(fuzz_peer_decode ${shoal_fuzz_peer_dir}/fuzz_peer_decode.c shoal_node_peer_proto)
