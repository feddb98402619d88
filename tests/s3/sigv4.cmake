# Tests of SigV4 signing (vectors vendored in tests/s3/sigv4-vectors) and of the credentials chain.
shoal_test(test_s3_sigv4 SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_s3_sigv4.c LIBS shoal_s3_sign)
# Each case starts Python fakes (STS, the metadata service): a few seconds on an idle machine, over a
# minute under sanitizers on a busy one (seen at a load of 50 on two cores); the timeout only bounds a hang.
shoal_test(test_s3_creds SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_s3_creds.c LIBS shoal_s3_sign TIMEOUT 300)
