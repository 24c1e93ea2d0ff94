/*
 * hook-inject's decision for a new container: one environment variable and one container
 * annotation carrying the same value, by default the node's name.
 *
 * | key              | default                          | meaning                                  |
 * | ---------------- | -------------------------------- | ---------------------------------------- |
 * | `env-name`       | `WASMGATE_NODE`                  | the variable to set; "" sets none        |
 * | `annotation-key` | `wasmgate.io/node`               | the annotation to set; "" sets none      |
 * | `value`          | key `node-name`, else `unknown`  | the value of both                        |
 * | `node-name`      |                                  | the value when `value` is not set        |
 *
 * This is the C port of plugins/rust/hook-inject/src/inject.rs and settings.rs. It knows nothing
 * of the generated bindings: hook.c feeds it `wasi:config/store` through `inject_settings` and
 * turns its `inject_decision` into the WIT `decision`, and test/inject_test.c feeds it a table,
 * natively. So the logic is unit-tested on the host, as the Rust one is with `cargo test`.
 */
#ifndef HOOK_INJECT_INJECT_H
#define HOOK_INJECT_INJECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define INJECT_KEY_ENV_NAME "env-name"
#define INJECT_KEY_ANNOTATION_KEY "annotation-key"
#define INJECT_KEY_VALUE "value"
#define INJECT_KEY_NODE_NAME "node-name"

#define INJECT_DEFAULT_ENV_NAME "WASMGATE_NODE"
#define INJECT_DEFAULT_ANNOTATION_KEY "wasmgate.io/node"
#define INJECT_DEFAULT_VALUE "unknown"

/*
 * An owned byte string: UTF-8, not NUL-terminated, from malloc. `ptr` is NULL when `len` is 0,
 * and it is freed exactly when `len > 0`: the rule the generated bindings use for their strings
 * too (their empty strings point at no allocation), so a buffer can move into a WIT value, and a
 * WIT string into a buffer, without copying.
 */
typedef struct inject_buf {
    uint8_t *ptr;
    size_t len;
} inject_buf;

/* Frees `b` (when it owns anything) and leaves it empty. */
void inject_buf_free(inject_buf *b);

/* How reading one configuration key went. */
typedef enum inject_read {
    INJECT_UNSET,  /* the key is not set */
    INJECT_SET,    /* the value is in *out */
    INJECT_FAILED, /* the store failed; why is in *out */
} inject_read;

/*
 * Where configuration comes from: `wasi:config/store` in the component, a table in the unit
 * tests. `get` fills `*out` (owned by the caller afterwards) for INJECT_SET and INJECT_FAILED,
 * and leaves it empty for INJECT_UNSET.
 */
typedef struct inject_settings {
    inject_read (*get)(void *ctx, const char *key, inject_buf *out);
    void *ctx;
} inject_settings;

typedef enum inject_kind {
    INJECT_ALLOW,
    INJECT_DENY,
    INJECT_ADJUST,
} inject_kind;

/* The decision for a create-container request. Every buffer is owned: free with
 * inject_decision_free, or move the buffers out (leaving them empty) first. */
typedef struct inject_decision {
    inject_kind kind;
    /* INJECT_DENY: the reason, "hook-inject: ...". */
    inject_buf reason;
    /* INJECT_ADJUST: the variable to set, when has_env. */
    bool has_env;
    inject_buf env_name;
    inject_buf env_value;
    /* INJECT_ADJUST: the annotation to set, when has_annotation. */
    bool has_annotation;
    inject_buf annotation_key;
    inject_buf annotation_value;
} inject_decision;

/*
 * The decision for a create-container request, read from `settings` (read on every call: the
 * host may reuse an instance and an operator may have changed the keys in between):
 * - INJECT_ALLOW when both `env-name` and `annotation-key` are empty;
 * - INJECT_DENY when `env-name` contains '=' or NUL, or a key cannot be read (naming it);
 * - INJECT_ADJUST otherwise, with the variable, the annotation or both.
 * Other requests are allowed without reading anything; hook.c sees to that.
 */
void inject_create_container(const inject_settings *settings, inject_decision *out);

void inject_decision_free(inject_decision *d);

/* Unicode White_Space trimming at both ends, as Rust's str::trim. `s` must be valid UTF-8 (a
 * malformed sequence at an end stops the trim there). Returns the trimmed start; *len is updated. */
const uint8_t *inject_trim(const uint8_t *s, size_t *len);

#endif
