/*
 * `{{name}}`: a wasmgate CRI runtime hook, the exports of `wasmgate:plugin/hook` for the world
 * `{{world_id}}` (wit/runtime.wit) over the C bindings that wit-bindgen generates into
 * target/bindings/ (runtime_hook.h), and `wasi:config/store`. The events are in decide.h, the
 * decision in decide.c.
 *
 * The host's CRI proxy asks for two lists of events once per loaded version: `subscriptions()`,
 * the calls `pre` judges before the runtime sees them (allow, deny or adjust them), and
 * `post-subscriptions()`, the calls whose outcome `post` sees after the runtime answered.
 * The host may reuse an instance after a call succeeds, so anything that must last goes in
 * `wasi:keyvalue`, and nothing may leak.
 *
 * Ownership, as the generated bindings define it:
 * - arguments of an export belong to the export: pre() and post() free their request and outcome;
 * - a returned value is freed by the generated post-return function after the host has copied it
 *   out, string by string and list by list, so it is built from separate malloc'd pieces;
 * - an import borrows its arguments and hands back results that the caller frees.
 *
 * Requests are freed by free_request() below, not by the generated
 * exports_wasmgate_plugin_hook_request_free(): wit-bindgen's C generator frees nothing for the
 * `list<string>` and `tuple<string, string>` fields of cri-types' records (both types are first
 * defined for wasi:keyvalue and wasi:config, and their later uses get no free), which would leak
 * about the whole request on every call. wasmgate's plugins/c/hook-inject does the same.
 *
 * See wasmgate's `plugins/c/hook-inject` and `plugins/rust/hook-policy` for more.
 */
#include <stdlib.h>
#include <string.h>

#include "decide.h"
#include "runtime_hook.h"

/* A bindings string from a decide_buf, moving the allocation: both follow "freed iff len > 0". */
static runtime_hook_string_t to_wit(decide_buf *b) {
    runtime_hook_string_t s = {b->ptr, b->len};
    b->ptr = NULL;
    b->len = 0;
    return s;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (p == NULL) {
        abort();
    }
    return p;
}

/* ---- wasi:config/store ------------------------------------------------------------------- */

/* Reads `key` into *s; *held is what to free afterwards. */
static void read_setting(const char *key, setting *s, runtime_hook_string_t *held) {
    runtime_hook_string_t k = {(uint8_t *)key, strlen(key)};
    runtime_hook_option_string_t value;
    wasi_config_store_error_t err;
    held->ptr = NULL;
    held->len = 0;
    if (wasi_config_store_get(&k, &value, &err)) {
        if (!value.is_some) {
            s->state = SETTING_UNSET;
            s->text = NULL;
            s->len = 0;
            return;
        }
        *held = value.val;
        s->state = SETTING_SET;
    } else {
        /* Both cases carry only a message. */
        *held = err.tag == WASI_CONFIG_STORE_ERROR_UPSTREAM ? err.val.upstream : err.val.io;
        s->state = SETTING_FAILED;
    }
    s->text = held->ptr;
    s->len = held->len;
}

/* ---- freeing a request -------------------------------------------------------------------- */

static void free_string_map(wasmgate_plugin_cri_types_string_map_t *m) {
    for (size_t i = 0; i < m->len; i++) {
        runtime_hook_tuple2_string_string_free(&m->ptr[i]);
    }
    if (m->len > 0) {
        free(m->ptr);
    }
    m->ptr = NULL;
    m->len = 0;
}

static void free_string_list(runtime_hook_list_string_t *l) {
    runtime_hook_list_string_free(l);
    l->ptr = NULL;
    l->len = 0;
}

static void free_pod(wasmgate_plugin_cri_types_pod_t *p) {
    runtime_hook_string_free(&p->id);
    runtime_hook_string_free(&p->name);
    runtime_hook_string_free(&p->namespace_);
    runtime_hook_string_free(&p->uid);
    free_string_map(&p->labels);
    free_string_map(&p->annotations);
    runtime_hook_string_free(&p->runtime_handler);
}

static void free_container(wasmgate_plugin_cri_types_container_t *c) {
    runtime_hook_string_free(&c->id);
    runtime_hook_string_free(&c->name);
    runtime_hook_string_free(&c->image);
    free_string_list(&c->command);
    free_string_list(&c->args);
    free_string_map(&c->env);
    wasmgate_plugin_cri_types_list_mount_free(&c->mounts);
    wasmgate_plugin_cri_types_list_device_free(&c->devices);
    wasmgate_plugin_cri_types_option_resources_free(&c->resources);
    c->resources.is_some = false;
    free_string_list(&c->security.add_capabilities);
    free_string_list(&c->security.drop_capabilities);
    free_string_map(&c->labels);
    free_string_map(&c->annotations);
    runtime_hook_string_free(&c->working_dir);
}

static void free_request(wasmgate_plugin_cri_types_request_t *req) {
    switch (req->tag) {
    case WASMGATE_PLUGIN_CRI_TYPES_REQUEST_RUN_POD:
        free_pod(&req->val.run_pod);
        break;
    case WASMGATE_PLUGIN_CRI_TYPES_REQUEST_STOP_POD:
        free_pod(&req->val.stop_pod);
        break;
    case WASMGATE_PLUGIN_CRI_TYPES_REQUEST_REMOVE_POD:
        free_pod(&req->val.remove_pod);
        break;
    /* The container cases share one payload type, tuple<pod, container>, at the same offset. */
    case WASMGATE_PLUGIN_CRI_TYPES_REQUEST_CREATE_CONTAINER:
    case WASMGATE_PLUGIN_CRI_TYPES_REQUEST_START_CONTAINER:
    case WASMGATE_PLUGIN_CRI_TYPES_REQUEST_UPDATE_CONTAINER:
    case WASMGATE_PLUGIN_CRI_TYPES_REQUEST_STOP_CONTAINER:
    case WASMGATE_PLUGIN_CRI_TYPES_REQUEST_REMOVE_CONTAINER:
        free_pod(&req->val.create_container.f0);
        free_container(&req->val.create_container.f1);
        break;
    case WASMGATE_PLUGIN_CRI_TYPES_REQUEST_PULL_IMAGE:
        runtime_hook_string_free(&req->val.pull_image.image);
        free_string_map(&req->val.pull_image.annotations);
        if (req->val.pull_image.pod.is_some) {
            free_pod(&req->val.pull_image.pod.val);
            req->val.pull_image.pod.is_some = false;
        }
        break;
    default:
        /* The lifting glue makes no other tag. */
        abort();
    }
}

/* ---- the exports -------------------------------------------------------------------------- */

#define COUNT_EVENT(name) +1
#define APPEND_EVENT(name) ret->ptr[ret->len++] = WASMGATE_PLUGIN_CRI_TYPES_EVENT_##name;

/* Returns LIST, one of decide.h's, through `ret`. The post-return glue frees a list that is not
 * empty; an empty one allocates nothing, as malloc(0) may give NULL (which xmalloc takes for
 * running out) or a pointer that the glue never frees. */
#define RETURN_EVENTS(LIST)                                                                  \
    do {                                                                                     \
        size_t n = 0 LIST(COUNT_EVENT);                                                      \
        ret->ptr = n > 0 ? xmalloc(n * sizeof *ret->ptr) : NULL;                             \
        ret->len = 0;                                                                        \
        LIST(APPEND_EVENT)                                                                   \
    } while (0)

void exports_wasmgate_plugin_hook_subscriptions(exports_wasmgate_plugin_hook_list_event_t *ret) {
    RETURN_EVENTS(SUBSCRIPTIONS);
}

void exports_wasmgate_plugin_hook_post_subscriptions(
    exports_wasmgate_plugin_hook_list_event_t *ret) {
    RETURN_EVENTS(POST_SUBSCRIPTIONS);
}

void exports_wasmgate_plugin_hook_pre(exports_wasmgate_plugin_hook_request_t *req,
                                      exports_wasmgate_plugin_hook_decision_t *ret) {
    bool create = req->tag == WASMGATE_PLUGIN_CRI_TYPES_REQUEST_CREATE_CONTAINER;
    free_request(req);

    memset(ret, 0, sizeof *ret);
    if (!create) {
        ret->tag = WASMGATE_PLUGIN_CRI_TYPES_DECISION_ALLOW;
        return;
    }

    /* Read on every call: an operator may change the key between calls. */
    setting s;
    runtime_hook_string_t held;
    read_setting(ANNOTATION_KEY, &s, &held);
    decision d;
    decide(&s, &d);
    runtime_hook_string_free(&held);

    switch (d.kind) {
    case DECIDE_ALLOW:
        ret->tag = WASMGATE_PLUGIN_CRI_TYPES_DECISION_ALLOW;
        break;
    case DECIDE_DENY:
        ret->tag = WASMGATE_PLUGIN_CRI_TYPES_DECISION_DENY;
        ret->val.deny = to_wit(&d.reason);
        break;
    case DECIDE_ADJUST: {
        ret->tag = WASMGATE_PLUGIN_CRI_TYPES_DECISION_ADJUST;
        /* Zeroed by the memset above: every other list empty, every option none. */
        wasmgate_plugin_cri_types_adjustment_t *a = &ret->val.adjust;
        a->annotations.ptr = xmalloc(sizeof *a->annotations.ptr);
        a->annotations.ptr[0].f0 = to_wit(&d.key);
        a->annotations.ptr[0].f1 = to_wit(&d.value);
        a->annotations.len = 1;
        break;
    }
    }
    decision_free(&d);
}

void exports_wasmgate_plugin_hook_post(exports_wasmgate_plugin_hook_request_t *req,
                                       exports_wasmgate_plugin_hook_outcome_t *outcome) {
    /* The world requires it, though the host calls it for no event while POST_SUBSCRIPTIONS is
     * empty; a call would still own both arguments, and free them. */
    free_request(req);
    exports_wasmgate_plugin_hook_outcome_free(outcome);
}
