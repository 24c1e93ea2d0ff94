/*
 * `{{name}}`: the decision of a wasmgate CRI runtime hook (`{{world_id}}`), with no bindings,
 * so the unit tests build it natively. src/hook.c wires it to the world.
 *
 * What it does, as `wasmgate plugin new` wrote it: it allows every new container, adding one
 * container annotation when the `wasi:config` key `annotation` holds `KEY=VALUE`. A malformed
 * value denies the call, naming the key, rather than letting a container start without what the
 * operator asked for.
 */
#ifndef DECIDE_H
#define DECIDE_H

#include <stddef.h>
#include <stdint.h>

#define PLUGIN_NAME "{{name}}"

/* The `wasi:config` key: `KEY=VALUE`, an annotation for every new container. */
#define ANNOTATION_KEY "annotation"

/* A malloc'd byte string, not NUL-terminated; ptr is NULL when len is 0. */
typedef struct {
    uint8_t *ptr;
    size_t len;
} decide_buf;

/* What reading the key gave. */
typedef enum { SETTING_UNSET, SETTING_SET, SETTING_FAILED } setting_state;

typedef struct {
    setting_state state;
    /* The value when SET, the store's message when FAILED. */
    const uint8_t *text;
    size_t len;
} setting;

typedef enum { DECIDE_ALLOW, DECIDE_DENY, DECIDE_ADJUST } decision_kind;

typedef struct {
    decision_kind kind;
    decide_buf reason;           /* DENY */
    decide_buf key, value;       /* ADJUST: the annotation */
} decision;

/* The decision for a new container, given the `annotation` setting. */
void decide(const setting *s, decision *out);

/* Frees what a decision still holds. */
void decision_free(decision *d);

#endif
