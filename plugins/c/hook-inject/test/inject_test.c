/*
 * Unit tests of hook-inject's logic (src/inject.c), natively on the build machine: the cases of
 * the Rust hook's `cargo test` (plugins/rust/hook-inject/src/inject.rs and settings.rs), plus
 * the C port's own trimming and escaping. `plugins/c/build --test` builds this with ASan and
 * UBSan, so a leak or an out-of-bounds access fails it as surely as a wrong answer.
 *
 * The source is included, not linked, so the static helpers can be tested too.
 */
#include "../src/inject.c"

#include <stdio.h>

/* The tables below leave fake_entry.len out where it is 0 (the value's strlen). */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

static int failures = 0;
static int passed = 0;

/* ---- a fake configuration store -------------------------------------------------------------- */

typedef struct fake_entry {
    const char *key;
    const char *value; /* NULL: reading the key fails with `error` */
    const char *error;
    size_t len; /* of value; 0: strlen(value) (for values with a NUL in them) */
} fake_entry;

typedef struct fake_settings {
    const fake_entry *entries;
    size_t n;
    /* The keys read, in order, comma-separated: the port must read what the Rust hook reads. */
    char reads[256];
} fake_settings;

static inject_read fake_get(void *ctx, const char *key, inject_buf *out) {
    fake_settings *f = ctx;
    size_t used = strlen(f->reads);
    snprintf(f->reads + used, sizeof f->reads - used, "%s%s", used ? "," : "", key);
    for (size_t i = 0; i < f->n; i++) {
        if (strcmp(f->entries[i].key, key) == 0) {
            /* Owned copies, as the bindings hand over. */
            if (f->entries[i].value == NULL) {
                *out = copy_cstr(f->entries[i].error);
                return INJECT_FAILED;
            }
            const char *v = f->entries[i].value;
            *out = copy(v, f->entries[i].len > 0 ? f->entries[i].len : strlen(v));
            return INJECT_SET;
        }
    }
    return INJECT_UNSET;
}

/* Runs the hook over `entries` and renders its decision as the Rust tests' Debug would read it:
 * `allow`, `deny(<reason>)` or `adjust(env=[K=V] annotations=[K=V])`. */
static void decide(const fake_entry *entries, size_t n, char *rendered, size_t cap, char *reads) {
    fake_settings f = {entries, n, {0}};
    inject_settings s = {fake_get, &f};
    inject_decision d;
    inject_create_container(&s, &d);
    switch (d.kind) {
    case INJECT_ALLOW:
        snprintf(rendered, cap, "allow");
        break;
    case INJECT_DENY:
        snprintf(rendered, cap, "deny(%.*s)", (int)d.reason.len, (const char *)d.reason.ptr);
        break;
    case INJECT_ADJUST: {
        char env[128] = "", ann[128] = "";
        if (d.has_env) {
            snprintf(env, sizeof env, "%.*s=%.*s", (int)d.env_name.len, (const char *)d.env_name.ptr,
                     (int)d.env_value.len, (const char *)d.env_value.ptr);
        }
        if (d.has_annotation) {
            snprintf(ann, sizeof ann, "%.*s=%.*s", (int)d.annotation_key.len,
                     (const char *)d.annotation_key.ptr, (int)d.annotation_value.len,
                     (const char *)d.annotation_value.ptr);
        }
        snprintf(rendered, cap, "adjust(env=[%s] annotations=[%s])", env, ann);
        break;
    }
    }
    /* Two halves never share an allocation (the bindings free each string on its own). */
    if (d.has_env && d.has_annotation && d.env_value.len > 0 &&
        d.env_value.ptr == d.annotation_value.ptr) {
        snprintf(rendered, cap, "shared value buffer");
    }
    if (reads != NULL) {
        strcpy(reads, f.reads);
    }
    inject_decision_free(&d);
}

static void expect_str(const char *test, const char *got, const char *want) {
    if (strcmp(got, want) != 0) {
        fprintf(stderr, "FAIL %s\n  got:  %s\n  want: %s\n", test, got, want);
        failures++;
    } else {
        passed++;
    }
}

static void expect_decision(const char *test, const fake_entry *e, size_t n, const char *want) {
    char got[512];
    decide(e, n, got, sizeof got, NULL);
    expect_str(test, got, want);
}

/* ---- the Rust hook's cases ----------------------------------------------------------------- */

static void defaults_inject_unknown(void) {
    expect_decision(__func__, NULL, 0,
                    "adjust(env=[WASMGATE_NODE=unknown] annotations=[wasmgate.io/node=unknown])");
}

static void node_name_is_the_default_value(void) {
    const fake_entry e[] = {{"node-name", "worker-1", NULL}};
    expect_decision(__func__, e, 1,
                    "adjust(env=[WASMGATE_NODE=worker-1] annotations=[wasmgate.io/node=worker-1])");
}

static void value_wins_over_node_name(void) {
    const fake_entry e[] = {{"node-name", "worker-1", NULL}, {"value", " zone-a ", NULL}};
    expect_decision(__func__, e, 2,
                    "adjust(env=[WASMGATE_NODE=zone-a] annotations=[wasmgate.io/node=zone-a])");
}

static void names_come_from_config(void) {
    const fake_entry e[] = {
        {"env-name", "NODE", NULL}, {"annotation-key", "example.com/node", NULL}, {"node-name", "n", NULL}};
    expect_decision(__func__, e, 3, "adjust(env=[NODE=n] annotations=[example.com/node=n])");
}

static void empty_name_disables_that_half(void) {
    const fake_entry no_env[] = {{"env-name", "", NULL}, {"node-name", "n", NULL}};
    expect_decision(__func__, no_env, 2, "adjust(env=[] annotations=[wasmgate.io/node=n])");
    const fake_entry no_annotation[] = {{"annotation-key", "", NULL}, {"node-name", "n", NULL}};
    expect_decision(__func__, no_annotation, 2, "adjust(env=[WASMGATE_NODE=n] annotations=[])");
    /* Whitespace only is empty after the trim. */
    const fake_entry neither[] = {{"env-name", "", NULL}, {"annotation-key", " \t", NULL}};
    expect_decision(__func__, neither, 2, "allow");
}

static void bad_env_name_is_denied(void) {
    const fake_entry e[] = {{"env-name", "A=B", NULL}};
    expect_decision(__func__, e, 1,
                    "deny(hook-inject: env-name \"A=B\" is not a valid environment variable name)");
}

static void unreadable_config_is_denied(void) {
    const fake_entry e[] = {{"node-name", NULL, "store down"}};
    expect_decision(__func__, e, 1,
                    "deny(hook-inject: cannot read wasi:config key node-name: store down)");
    const fake_entry first[] = {{"env-name", NULL, "boom"}};
    expect_decision(__func__, first, 1,
                    "deny(hook-inject: cannot read wasi:config key env-name: boom)");
    const fake_entry ann[] = {{"annotation-key", NULL, ""}};
    expect_decision(__func__, ann, 1,
                    "deny(hook-inject: cannot read wasi:config key annotation-key: )");
    const fake_entry value[] = {{"value", NULL, "io"}};
    expect_decision(__func__, value, 1, "deny(hook-inject: cannot read wasi:config key value: io)");
}

/* settings::string: trims, and tells a missing key from an empty one. */
static void string_trims_and_distinguishes_missing_from_empty(void) {
    const fake_entry e[] = {{"env-name", "  V ", NULL}, {"annotation-key", "", NULL}};
    expect_decision(__func__, e, 2, "adjust(env=[V=unknown] annotations=[])");
}

/* ---- the port's own details ---------------------------------------------------------------- */

/* The keys are read in the Rust hook's order, and `node-name` only when `value` is unset (so a
 * failing `node-name` does not matter then); nothing past a failure or an early answer. */
static void reads_what_the_rust_hook_reads(void) {
    char got[512], reads[256];
    const fake_entry with_value[] = {{"value", "v", NULL}, {"node-name", NULL, "down"}};
    decide(with_value, 2, got, sizeof got, reads);
    expect_str(__func__, got, "adjust(env=[WASMGATE_NODE=v] annotations=[wasmgate.io/node=v])");
    expect_str(__func__, reads, "env-name,annotation-key,value");

    decide(NULL, 0, got, sizeof got, reads);
    expect_str(__func__, reads, "env-name,annotation-key,value,node-name");

    const fake_entry neither[] = {{"env-name", "", NULL}, {"annotation-key", "", NULL}};
    decide(neither, 2, got, sizeof got, reads);
    expect_str(__func__, reads, "env-name,annotation-key");

    const fake_entry bad[] = {{"env-name", "A=B", NULL}};
    decide(bad, 1, got, sizeof got, reads);
    expect_str(__func__, reads, "env-name,annotation-key");

    const fake_entry failing[] = {{"env-name", NULL, "x"}};
    decide(failing, 1, got, sizeof got, reads);
    expect_str(__func__, reads, "env-name");
}

static void empty_value_is_injected_empty(void) {
    const fake_entry e[] = {{"value", "  ", NULL}, {"node-name", "n", NULL}};
    expect_decision(__func__, e, 2, "adjust(env=[WASMGATE_NODE=] annotations=[wasmgate.io/node=])");
}

static void nul_in_env_name_is_denied(void) {
    const fake_entry e[] = {{"env-name", "A\0B", NULL, 3}};
    expect_decision(__func__, e, 1,
                    "deny(hook-inject: env-name \"A\\0B\" is not a valid environment variable name)");
}

static void trim_is_unicode_white_space(void) {
    struct {
        const char *in, *want;
    } cases[] = {
        {"", ""},
        {"   ", ""},
        {" a ", "a"},
        {"\t\n\v\f\r a b \r\n", "a b"},
        {"\xc2\xa0x\xc2\x85", "x"},                  /* U+00A0, U+0085 */
        {"\xe3\x80\x80x\xe2\x80\xa8", "x"},          /* U+3000, U+2028 */
        {"\xe2\x80\x8bx\xe2\x80\x8b", "\xe2\x80\x8bx\xe2\x80\x8b"}, /* U+200B is not White_Space */
        {"\xc3\xa9", "\xc3\xa9"},                    /* é stays */
        {"a\xe2\x80\x83", "a"},                      /* U+2003 em space */
        {"\xf0\x9f\x98\x80 ", "\xf0\x9f\x98\x80"},   /* a 4-byte character before the space */
        {" \xe2\x80", "\xe2\x80"},                   /* truncated UTF-8: left alone, no overread */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = strlen(cases[i].in);
        /* A heap copy of exactly n bytes, so ASan catches any read past the end. */
        inject_buf b = copy(cases[i].in, n);
        const uint8_t *start = inject_trim(b.ptr, &n);
        char got[64];
        snprintf(got, sizeof got, "%.*s", (int)n, (const char *)start);
        expect_str(__func__, got, cases[i].want);
        inject_buf_free(&b);
    }
}

static void debug_quote_matches_rust(void) {
    /* Each expectation is what `format!("{:?}", s)` prints in Rust. */
    struct {
        const char *in, *want;
    } cases[] = {
        {"A=B", "\"A=B\""},
        {"a\"b\\c", "\"a\\\"b\\\\c\""},
        {"\t\r\n", "\"\\t\\r\\n\""},
        {"\x01\x1b\x7f", "\"\\u{1}\\u{1b}\\u{7f}\""},
        {"\xc2\x80\xc2\x9f", "\"\\u{80}\\u{9f}\""},
        {"caf\xc3\xa9='", "\"caf\xc3\xa9='\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        builder b = {{NULL, 0}, 0};
        push_debug_quoted(&b, (const uint8_t *)cases[i].in, strlen(cases[i].in));
        char got[128];
        snprintf(got, sizeof got, "%.*s", (int)b.buf.len, (const char *)b.buf.ptr);
        expect_str(__func__, got, cases[i].want);
        inject_buf_free(&b.buf);
    }
}

int main(void) {
    defaults_inject_unknown();
    node_name_is_the_default_value();
    value_wins_over_node_name();
    names_come_from_config();
    empty_name_disables_that_half();
    bad_env_name_is_denied();
    unreadable_config_is_denied();
    string_trims_and_distinguishes_missing_from_empty();
    reads_what_the_rust_hook_reads();
    empty_value_is_injected_empty();
    nul_in_env_name_is_denied();
    trim_is_unicode_white_space();
    debug_quote_matches_rust();
    printf("inject_test: %d passed, %d failed\n", passed, failures);
    return failures == 0 ? 0 : 1;
}
