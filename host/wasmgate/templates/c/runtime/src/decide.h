/*
 * `{{name}}`: the events and the decision of a wasmgate CRI runtime hook (`{{world_id}}`), with
 * no bindings, so the unit tests build them natively. src/hook.c wires them to the world.
 *
 * What it does, as `wasmgate plugin new` wrote it: it subscribes to `create-container`, and
 * allows every new container, adding one container annotation when the `wasi:config` key
 * `annotation` holds `KEY=VALUE`. A malformed value denies the call, naming the key, rather than
 * letting a container start without what the operator asked for. It wants no outcomes.
 */
#ifndef DECIDE_H
#define DECIDE_H

#include <stddef.h>
#include <stdint.h>

#define PLUGIN_NAME "{{name}}"

/*
 * The events the hook asks for, each list a macro that applies EVENT to every event's name in
 * wit/runtime.wit's `event` enum, written as the bindings' WASMGATE_PLUGIN_CRI_TYPES_EVENT_*
 * constants end: src/hook.c builds the exported lists from these and the unit tests read them,
 * with no enum of the events to keep in step with the WIT.
 *
 * SUBSCRIPTIONS: the events whose requests `pre` judges.
 * POST_SUBSCRIPTIONS: the events whose outcome `post` wants. None: `post` does nothing with an
 * outcome, and a hook that only judges requests costs nothing after the runtime answers.
 */
#define SUBSCRIPTIONS(EVENT) EVENT(CREATE_CONTAINER)
#define POST_SUBSCRIPTIONS(EVENT)

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
