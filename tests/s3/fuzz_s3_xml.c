/*
 * libFuzzer harness for s3_xml: every parser over the same bytes. Built only with -DSHOAL_FUZZ=ON
 * under clang (tests/s3/CMakeLists.txt):
 *   build-fuzz/tests/s3/fuzz_s3_xml -max_total_time=300 -max_len=65536
 * It proves absence of crashes, leaks and undefined behaviour (ASan + UBSan), and that a parse
 * that fails leaves the list page empty.
 */
#include "s3_xml.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    s3_list_page p;
    s3_list_page_create(&p);
    if (s3_xml_parse_list(data, len, &p) < 0 && (p.objects || p.prefixes || p.next_token))
        abort();
    s3_list_page_destroy(&p);
    s3_xml_result r;
    for (int k = S3_XML_ERROR; k <= S3_XML_COPY_PART; k++)
        s3_xml_parse_result(data, len, (s3_xml_result_kind)k, &r);
    shoal_buf b;
    shoal_buf_create(&b, 0);
    s3_url_decode(&b, (const char *)data, len);
    shoal_buf_destroy(&b);
    return 0;
}
