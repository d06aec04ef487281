/* Unit tests: hex, strict base64 (RFC 4648 vectors), certificate pins. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

static void hex(void **state)
{
    (void)state;
    assert_int_equal(codec_hex_value('0'), 0);
    assert_int_equal(codec_hex_value('f'), 15);
    assert_int_equal(codec_hex_value('F'), 15);
    assert_int_equal(codec_hex_value('g'), -1);
    assert_int_equal(codec_hex_value(':'), -1);
    char out[9];
    codec_hex_encode((const unsigned char *)"\x00\x9f\xff\x10", 4, out);
    assert_string_equal(out, "009fff10");
}

static void b64_rfc4648(void **state)
{
    (void)state;
    /* RFC 4648 §10 */
    const char *v[][2] = {{"", ""},         {"f", "Zg=="},     {"fo", "Zm8="},
                          {"foo", "Zm9v"},  {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="},
                          {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char *enc = codec_b64_encode(v[i][0], strlen(v[i][0]));
        assert_string_equal(enc, v[i][1]);
        free(enc);
        unsigned char *dec;
        size_t n;
        assert_int_equal(codec_b64_decode_alloc(v[i][1], strlen(v[i][1]), &dec, &n), 0);
        assert_int_equal(n, strlen(v[i][0]));
        assert_memory_equal(dec, v[i][0], n);
        free(dec);
    }
}

static void b64_strict(void **state)
{
    (void)state;
    const char *bad[] = {"Zg", "Zg=", "Zh==", "Zm9=", "Z===", "Zg==Zg==", "Zm 9v", "Zm9v\n",
                         "Zm-v", "=Zm9", "Z=g=", NULL};
    for (int i = 0; bad[i]; i++) {
        unsigned char out[16];
        size_t n, at = 99;
        assert_int_equal(codec_b64_decode(bad[i], strlen(bad[i]), out, sizeof out, &n, &at), -1);
        assert_true(at <= strlen(bad[i]));
    }
    unsigned char small[2];
    size_t n;
    assert_int_equal(codec_b64_decode("Zm9v", 4, small, sizeof small, &n, NULL), -2);
}

static void b64_buf(void **state)
{
    (void)state;
    char out[CODEC_B64_SIZE(6)];
    assert_int_equal(sizeof out, 9);
    assert_int_equal(codec_b64_encode_buf("foobar", 6, out, sizeof out), 0);
    assert_string_equal(out, "Zm9vYmFy");
    assert_int_equal(codec_b64_encode_buf("fooba", 5, out, sizeof out), 0);
    assert_string_equal(out, "Zm9vYmE=");
    /* one byte short: refused, and the buffer left empty */
    assert_int_equal(codec_b64_encode_buf("foobar", 6, out, sizeof out - 1), -1);
    assert_string_equal(out, "");
}

static void b64token(void **state)
{
    (void)state;
    const char *good[] = {"a", "abc.DEF-123_~+/", "ya29.x==", "Zm9v=", NULL};
    const char *bad[] = {"", "=", "==", "a b", "a=b", "a,b", "tok\n", "t\xc3\xa9", NULL};
    for (int i = 0; good[i]; i++)
        assert_true(codec_is_b64token(good[i]));
    for (int i = 0; bad[i]; i++)
        assert_false(codec_is_b64token(bad[i]));
}

static void pins(void **state)
{
    (void)state;
    unsigned char p[CODEC_PIN_LEN];
    const char *flat = "sha256:00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
    assert_int_equal(codec_pin_parse(flat, p), 0);
    assert_int_equal(p[0], 0x00);
    assert_int_equal(p[1], 0x11);
    assert_int_equal(p[31], 0xff);
    const char *pairs = "SHA256:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:"
                        "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff";
    unsigned char q[CODEC_PIN_LEN];
    assert_int_equal(codec_pin_parse(pairs, q), 0);
    assert_memory_equal(p, q, sizeof p);
    const char *bad[] = {"sha1:0011", "sha256:", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
                         "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeefg",
                         "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeef",
                         "sha256:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff;"
                         "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff",
                         NULL};
    for (int i = 0; bad[i]; i++)
        assert_int_equal(codec_pin_parse(bad[i], p), -1);
    assert_int_equal(codec_pin_parse(NULL, p), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hex),
        cmocka_unit_test(b64_rfc4648),
        cmocka_unit_test(b64_strict),
        cmocka_unit_test(b64_buf),
        cmocka_unit_test(b64token),
        cmocka_unit_test(pins),
    };
    return cmocka_run_group_tests_name("codec", tests, NULL, NULL);
}
