/*
 * s3_xml: correct parses of the documents S3 sends, and clear errors (never a crash, never an
 * expansion, never a fetch) for hostile or broken ones.
 */
#include "s3_xml.h"
#include "shoal_error.h"
#include "tt.h"

#include <stdlib.h>
#include <string.h>

#define NS "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\""

static void expect_xml_error(int rc, const char *what, const char *needle)
{
    TT_CHECK(rc == -1, "%s: parse succeeded", what);
    TT_CHECK(shoal_error_code() == SHOAL_ERR_S3_XML, "%s: code %s (%s)", what, shoal_error_name(shoal_error_code()),
             shoal_error_message());
    TT_CHECK(strstr(shoal_error_message(), needle) != NULL, "%s: message '%s' lacks '%s'", what,
             shoal_error_message(), needle);
}

TT_TEST(test_s3_xml_list_parses_objects_prefixes_and_token)
{
    const char *doc = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult " NS ">"
                      "<Name>b</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys>"
                      "<IsTruncated>true</IsTruncated><NextContinuationToken>tok+/=</NextContinuationToken>"
                      "<Contents><Key>p/a</Key><LastModified>2009-10-12T17:50:30.000Z</LastModified>"
                      "<ETag>&quot;fba9dede5f27731c9771645a39863328&quot;</ETag><Size>434234</Size>"
                      "<StorageClass>STANDARD</StorageClass></Contents>"
                      "<Contents><Key>p/b &amp; c</Key><Size>0</Size></Contents>"
                      "<CommonPrefixes><Prefix>p/d/</Prefix></CommonPrefixes>"
                      "<CommonPrefixes><Prefix>p/e/</Prefix></CommonPrefixes></ListBucketResult>";
    s3_list_page p;
    s3_list_page_create(&p);
    TT_OK(s3_xml_parse_list(doc, strlen(doc), &p));
    TT_CHECK(p.n_objects == 2 && p.n_prefixes == 2, "objects %zu prefixes %zu", p.n_objects, p.n_prefixes);
    TT_CHECK(strcmp(p.objects[0].key, "p/a") == 0 && p.objects[0].size == 434234, "first %s %llu",
             p.objects[0].key, (unsigned long long)p.objects[0].size);
    TT_CHECK(strcmp(p.objects[0].etag, "\"fba9dede5f27731c9771645a39863328\"") == 0, "etag %s", p.objects[0].etag);
    TT_CHECK(p.objects[0].last_modified == 1255369830, "last modified %lld", (long long)p.objects[0].last_modified);
    TT_CHECK(strcmp(p.objects[1].key, "p/b & c") == 0, "second key '%s'", p.objects[1].key);
    TT_CHECK(strcmp(p.prefixes[0], "p/d/") == 0 && strcmp(p.prefixes[1], "p/e/") == 0, "prefixes %s %s",
             p.prefixes[0], p.prefixes[1]);
    TT_CHECK(p.truncated && p.next_token && strcmp(p.next_token, "tok+/=") == 0, "token %s",
             p.next_token ? p.next_token : "(none)");
    s3_list_page_destroy(&p);
}

TT_TEST(test_s3_xml_list_decodes_url_encoded_keys_and_prefixes)
{
    /* EncodingType comes after the entries, as AWS sends it. */
    const char *doc = "<ListBucketResult " NS "><IsTruncated>false</IsTruncated>"
                      "<Contents><Key>a%20b%2Bc%0D%E2%82%AC</Key><Size>1</Size></Contents>"
                      "<Contents><Key>nul%00x</Key><Size>1</Size></Contents>"
                      "<CommonPrefixes><Prefix>d%2F%3F/</Prefix></CommonPrefixes>"
                      "<EncodingType>url</EncodingType></ListBucketResult>";
    s3_list_page p;
    s3_list_page_create(&p);
    TT_OK(s3_xml_parse_list(doc, strlen(doc), &p));
    TT_CHECK(p.n_objects == 2, "objects %zu", p.n_objects);
    TT_CHECK(strcmp(p.objects[0].key, "a b+c\r\xE2\x82\xAC") == 0, "decoded key '%s'", p.objects[0].key);
    TT_CHECK(p.objects[1].key_len == 5 && strlen(p.objects[1].key) == 3, "NUL key len %zu", p.objects[1].key_len);
    TT_CHECK(strcmp(p.prefixes[0], "d/?/") == 0, "decoded prefix '%s'", p.prefixes[0]);
    TT_CHECK(!p.truncated && !p.next_token, "not truncated");
    s3_list_page_destroy(&p);
}

TT_TEST(test_s3_xml_error_document_fields)
{
    const char *doc = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchKey</Code>"
                      "<Message>The resource you requested does not exist</Message>"
                      "<Resource>/mybucket/myfoto.jpg</Resource><RequestId>4442587FB7D0A2F9</RequestId></Error>";
    s3_xml_error e;
    TT_OK(s3_xml_parse_error(doc, strlen(doc), &e));
    TT_CHECK(strcmp(e.code, "NoSuchKey") == 0, "code %s", e.code);
    TT_CHECK(strcmp(e.message, "The resource you requested does not exist") == 0, "message %s", e.message);
    TT_CHECK(strcmp(e.request_id, "4442587FB7D0A2F9") == 0, "request id %s", e.request_id);
}

TT_TEST(test_s3_xml_initiate_and_copy_results)
{
    const char *init = "<InitiateMultipartUploadResult " NS "><Bucket>b</Bucket><Key>k</Key>"
                       "<UploadId>VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA</UploadId>"
                       "</InitiateMultipartUploadResult>";
    s3_xml_result r;
    TT_OK(s3_xml_parse_result(init, strlen(init), S3_XML_INITIATE_MULTIPART, &r));
    TT_CHECK(r.kind == S3_XML_INITIATE_MULTIPART, "kind %d", r.kind);
    TT_CHECK(strcmp(r.upload_id, "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA") == 0, "id %s",
             r.upload_id);
    const char *copy = "<CopyPartResult><LastModified>2011-04-11T20:34:56.000Z</LastModified>"
                       "<ETag>\"9b2cf535f27731c974343645a3985328\"</ETag></CopyPartResult>";
    TT_OK(s3_xml_parse_result(copy, strlen(copy), S3_XML_COPY_PART, &r));
    TT_CHECK(strcmp(r.etag, "\"9b2cf535f27731c974343645a3985328\"") == 0, "etag %s", r.etag);
    TT_CHECK(r.last_modified == 1302554096, "last modified %lld", (long long)r.last_modified);
}

TT_TEST(test_s3_xml_complete_with_error_body_is_reported_as_error)
{
    /* S3 may answer CompleteMultipartUpload with 200 and then an <Error> body. */
    const char *doc = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\n<Error><Code>InternalError</Code>"
                      "<Message>We encountered an internal error. Please try again.</Message>"
                      "<RequestId>656c76696e6727732072657175657374</RequestId></Error>";
    s3_xml_result r;
    TT_OK(s3_xml_parse_result(doc, strlen(doc), S3_XML_COMPLETE_MULTIPART, &r));
    TT_CHECK(r.kind == S3_XML_ERROR, "kind %d, expected the error kind", r.kind);
    TT_CHECK(strcmp(r.error.code, "InternalError") == 0, "code %s", r.error.code);
    const char *ok = "<CompleteMultipartUploadResult " NS "><Location>x</Location><Bucket>b</Bucket><Key>k</Key>"
                     "<ETag>\"3858f62230ac3c915f300c664312c11f-9\"</ETag></CompleteMultipartUploadResult>";
    TT_OK(s3_xml_parse_result(ok, strlen(ok), S3_XML_COMPLETE_MULTIPART, &r));
    TT_CHECK(r.kind == S3_XML_COMPLETE_MULTIPART && strcmp(r.etag, "\"3858f62230ac3c915f300c664312c11f-9\"") == 0,
             "kind %d etag %s", r.kind, r.etag);
}

TT_TEST(test_s3_xml_build_complete_escapes_and_orders_parts)
{
    s3_part_etag parts[2] = {{1, "\"a<b\""}, {2, "\"c&d\""}};
    shoal_buf b;
    shoal_buf_create(&b, 0);
    TT_OK(s3_xml_build_complete(&b, parts, 2));
    const char *want = "<Part><PartNumber>1</PartNumber><ETag>&quot;a&lt;b&quot;</ETag></Part>"
                       "<Part><PartNumber>2</PartNumber><ETag>&quot;c&amp;d&quot;</ETag></Part>";
    TT_CHECK(strstr(shoal_buf_str(&b), want) != NULL, "body %s", shoal_buf_str(&b));
    s3_part_etag bad[2] = {{2, "x"}, {1, "y"}};
    shoal_buf_reset(&b);
    TT_CHECK(s3_xml_build_complete(&b, bad, 2) == -1 && shoal_error_code() == SHOAL_ERR_INVAL,
             "out-of-order parts accepted");
    shoal_buf_destroy(&b);
}

TT_TEST(test_s3_xml_truncated_document_is_an_error)
{
    const char *doc = "<ListBucketResult " NS "><Contents><Key>a</Key><Size>1</Si";
    s3_list_page p;
    s3_list_page_create(&p);
    expect_xml_error(s3_xml_parse_list(doc, strlen(doc), &p), "truncated", "malformed XML");
    TT_CHECK(p.n_objects == 0 && p.objects == NULL, "page not emptied after failure");
}

TT_TEST(test_s3_xml_billion_laughs_is_refused)
{
    shoal_buf b;
    shoal_buf_create(&b, 0);
    shoal_buf_append_str(&b, "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">");
    for (int i = 1; i < 10; i++) {
        shoal_buf_appendf(&b, "<!ENTITY lol%d \"", i);
        for (int j = 0; j < 10; j++) {
            if (i == 1)
                shoal_buf_append_str(&b, "&lol;");
            else
                shoal_buf_appendf(&b, "&lol%d;", i - 1);
        }
        shoal_buf_append_str(&b, "\">");
    }
    shoal_buf_append_str(&b, "]><Error><Code>&lol9;</Code></Error>");
    s3_xml_error e;
    expect_xml_error(s3_xml_parse_error(b.data, b.len, &e), "billion laughs", "DTD");
    shoal_buf_destroy(&b);
}

TT_TEST(test_s3_xml_external_entity_is_refused)
{
    const char *doc = "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>"
                      "<ListBucketResult><Contents><Key>&xxe;</Key></Contents></ListBucketResult>";
    s3_list_page p;
    s3_list_page_create(&p);
    expect_xml_error(s3_xml_parse_list(doc, strlen(doc), &p), "external entity", "DTD");
    /* Without the word DOCTYPE in plain sight (a parameter entity trick): still no fetch. */
    const char *doc2 = "<?xml version=\"1.0\"?><ListBucketResult><Contents><Key>&xxe;</Key></Contents>"
                       "</ListBucketResult>";
    expect_xml_error(s3_xml_parse_list(doc2, strlen(doc2), &p), "undeclared entity", "malformed XML");
}

TT_TEST(test_s3_xml_huge_key_is_an_error)
{
    shoal_buf b;
    shoal_buf_create(&b, 0);
    shoal_buf_append_str(&b, "<ListBucketResult><Contents><Key>");
    for (int i = 0; i < S3_XML_MAX_KEY + 1; i++)
        shoal_buf_append_byte(&b, 'k');
    shoal_buf_append_str(&b, "</Key><Size>1</Size></Contents></ListBucketResult>");
    s3_list_page p;
    s3_list_page_create(&p);
    expect_xml_error(s3_xml_parse_list(b.data, b.len, &p), "huge key", "bound");
    /* A key of exactly the bound is fine. */
    shoal_buf_reset(&b);
    shoal_buf_append_str(&b, "<ListBucketResult><Contents><Key>");
    for (int i = 0; i < S3_XML_MAX_KEY; i++)
        shoal_buf_append_byte(&b, 'k');
    shoal_buf_append_str(&b, "</Key><Size>1</Size></Contents></ListBucketResult>");
    TT_OK(s3_xml_parse_list(b.data, b.len, &p));
    TT_CHECK(p.n_objects == 1 && p.objects[0].key_len == S3_XML_MAX_KEY, "key len %zu", p.objects[0].key_len);
    s3_list_page_destroy(&p);
    shoal_buf_destroy(&b);
}

TT_TEST(test_s3_xml_oversized_document_is_refused_before_parsing)
{
    size_t len = (size_t)S3_XML_MAX_DOC + 1;
    char *doc = malloc(len);
    TT_CHECK(doc != NULL, "malloc");
    memset(doc, ' ', len);
    s3_xml_error e;
    expect_xml_error(s3_xml_parse_error(doc, len, &e), "oversized", "bound");
    free(doc);
}

TT_TEST(test_s3_xml_wrong_root_is_an_error)
{
    const char *doc = "<ListAllMyBucketsResult><Buckets/></ListAllMyBucketsResult>";
    s3_list_page p;
    s3_list_page_create(&p);
    expect_xml_error(s3_xml_parse_list(doc, strlen(doc), &p), "wrong root", "ListBucketResult");
    s3_xml_result r;
    expect_xml_error(s3_xml_parse_result(doc, strlen(doc), S3_XML_COPY_OBJECT, &r), "wrong root", "root");
}

TT_TEST(test_s3_xml_markup_inside_a_field_and_bad_numbers_are_errors)
{
    const char *doc = "<ListBucketResult><Contents><Key>a<b/></Key></Contents></ListBucketResult>";
    s3_list_page p;
    s3_list_page_create(&p);
    expect_xml_error(s3_xml_parse_list(doc, strlen(doc), &p), "markup in key", "markup");
    const char *doc2 = "<ListBucketResult><Contents><Key>a</Key><Size>-3</Size></Contents></ListBucketResult>";
    expect_xml_error(s3_xml_parse_list(doc2, strlen(doc2), &p), "negative size", "not a number");
    const char *doc3 = "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>";
    expect_xml_error(s3_xml_parse_list(doc3, strlen(doc3), &p), "no token", "NextContinuationToken");
    const char *doc4 = "<ListBucketResult><EncodingType>url</EncodingType><Contents><Key>a%zz</Key></Contents>"
                       "</ListBucketResult>";
    expect_xml_error(s3_xml_parse_list(doc4, strlen(doc4), &p), "bad escape", "escape");
}

TT_TEST(test_s3_url_decode_keeps_plus_and_nul_and_refuses_broken_escapes)
{
    shoal_buf b;
    shoal_buf_create(&b, 0);
    TT_OK(s3_url_decode(&b, "a+b%2bc%2B%00%e2%82%AC%25", 25));
    TT_CHECK(b.len == 11 && memcmp(b.data, "a+b+c+\0\xE2\x82\xAC%", 11) == 0, "decoded %zu bytes: %s", b.len,
             shoal_buf_str(&b));
    char *percent = malloc(1); /* not NUL-terminated: a read past it fails under ASan */
    TT_CHECK(percent, "malloc");
    percent[0] = '%';
    shoal_buf_reset(&b);
    TT_OK(s3_url_decode(&b, percent, 0));
    TT_CHECK(b.len == 0, "empty text decodes to nothing (%zu bytes)", b.len);
    free(percent);
    static const char *const bad[] = {"%", "a%4", "%zz", "%4g", "%%41", "x%"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        shoal_buf_reset(&b);
        expect_xml_error(s3_url_decode(&b, bad[i], strlen(bad[i])), bad[i], "malformed %-escape");
    }
    shoal_buf_destroy(&b);
}

TT_TEST(test_s3_xml_build_complete_keeps_a_cr_in_an_etag)
{
    s3_part_etag parts[1] = {{1, "a\r'b>"}};
    shoal_buf b;
    shoal_buf_create(&b, 0);
    TT_OK(s3_xml_build_complete(&b, parts, 1));
    TT_CHECK(strstr(shoal_buf_str(&b), "<ETag>a&#13;'b&gt;</ETag>"),
             "a CR is a character reference (a parser reads "
             "a raw CR as LF), an apostrophe needs none: %s",
             shoal_buf_str(&b));
    shoal_buf_destroy(&b);
}

TT_TEST(test_s3_xml_empty_and_garbage_documents_are_errors)
{
    s3_xml_error e;
    expect_xml_error(s3_xml_parse_error("", 0, &e), "empty", "empty");
    const char garbage[] = "\x00\xff\xfe<<>>&&;";
    expect_xml_error(s3_xml_parse_error(garbage, sizeof garbage - 1, &e), "garbage", "malformed");
    const char *html = "<html><body>502 Bad Gateway</body></html>";
    expect_xml_error(s3_xml_parse_error(html, strlen(html), &e), "html", "root");
}

TT_MAIN()
