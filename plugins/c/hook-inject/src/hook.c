/*
 * hook-inject in C: the exports of `wasmgate:plugin/hook@0.3.0` (world
 * `wasmgate:plugin/runtime-hook@0.3.0`, wit/v0.3.0/runtime.wit) over the C bindings that
 * wit-bindgen generates into target/bindings/ (runtime_hook.h), and `wasi:config/store` behind
 * inject_settings. The decision itself is in inject.c.
 *
 * Ownership, as the generated bindings define it:
 * - arguments of an export belong to the export: pre() and post() free their request and outcome;
 * - a returned value is freed by the generated post-return function after the host has copied it
 *   out, string by string and list by list, so it must be built from separate malloc'd pieces;
 * - an import borrows its arguments and hands back results that the caller frees.
 *
 * The request is freed by free_request() below, not by the generated
 * exports_wasmgate_plugin_hook_request_free(): wit-bindgen 0.61.1's C generator (its free code
 * is unchanged in 0.63.0) frees nothing for the `list<string>` and `tuple<string, string>` fields
 * of cri-types' records (`wasmgate_plugin_cri_types_string_map_free` frees the list but not its
 * strings; the container's and the security context's frees skip command, args and the
 * capabilities). Both anonymous types are first defined for wasi:keyvalue and wasi:config in
 * the same world, and their later uses get no free. It would leak about the whole request on
 * every call of an instance the host reuses; tests/tests/inject_hooks.rs
 * (one_instance_serves_many_calls_without_leaking) catches that.
 */
#include <stdlib.h>
#include <string.h>

#include "inject.h"
#include "runtime_hook.h"

typedef wasmgate_plugin_cri_types_adjustment_t adjustment_t;

/* A bindings string from a buffer, and back: both follow the "freed iff len > 0" rule, so this
 * moves the allocation. An empty bindings string may point at no allocation (cabi_realloc
 * returns its alignment for size 0), hence NULL for the buffer then. */
static runtime_hook_string_t to_wit(inject_buf *b) {
    runtime_hook_string_t s = {b->ptr, b->len};
    b->ptr = NULL;
    b->len = 0;
    return s;
}

static inject_buf from_wit(runtime_hook_string_t *s) {
    inject_buf b = {s->len > 0 ? s->ptr : NULL, s->len};
    s->ptr = NULL;
    s->len = 0;
    return b;
}

/* See inject.c: a trap is the only honest answer to running out of memory. */
static void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (p == NULL) {
        abort();
    }
    return p;
}

/* ---- wasi:config/store ------------------------------------------------------------------- */

/* inject_settings.get over `wasi:config/store.get`; a missing key is INJECT_UNSET. */
static inject_read wasi_config_get(void *ctx, const char *key, inject_buf *out) {
    (void)ctx;
    /* Borrowed by the import: it reads the key and keeps nothing. */
    runtime_hook_string_t k = {(uint8_t *)key, strlen(key)};
    runtime_hook_option_string_t value;
    wasi_config_store_error_t err;
    if (wasi_config_store_get(&k, &value, &err)) {
        if (!value.is_some) {
            return INJECT_UNSET;
        }
        *out = from_wit(&value.val);
        return INJECT_SET;
    }
    /* Both cases carry only a message, which is what the reason needs (the Rust hook does the
     * same: `Error::Upstream(msg) | Error::Io(msg) => msg`). */
    switch (err.tag) {
    case WASI_CONFIG_STORE_ERROR_UPSTREAM:
        *out = from_wit(&err.val.upstream);
        break;
    case WASI_CONFIG_STORE_ERROR_IO:
        *out = from_wit(&err.val.io);
        break;
    default:
        /* The host writes no other case (the canonical ABI checks discriminants). */
        abort();
    }
    return INJECT_FAILED;
}

static const inject_settings WASI_SETTINGS = {wasi_config_get, NULL};

/* ---- freeing a request -------------------------------------------------------------------- */

/* Only generated frees that are complete are used here: strings, list<string> (defined with
 * wasi:keyvalue, where its free is whole), tuple<string, string>, mounts, devices, resources. */

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
        /* The lifting glue makes no other tag (the host validates the discriminant). */
        abort();
    }
}

/* ---- the exports -------------------------------------------------------------------------- */

void exports_wasmgate_plugin_hook_subscriptions(exports_wasmgate_plugin_hook_list_event_t *ret) {
    /* Freed by the post-return glue with free(). */
    ret->ptr = xmalloc(sizeof *ret->ptr);
    ret->ptr[0] = WASMGATE_PLUGIN_CRI_TYPES_EVENT_CREATE_CONTAINER;
    ret->len = 1;
}

void exports_wasmgate_plugin_hook_post_subscriptions(
    exports_wasmgate_plugin_hook_list_event_t *ret) {
    /* None: the hook only adjusts, so the host need not call post() after the runtime answers.
     * An empty list owns no allocation (the post-return glue frees only when len > 0). */
    ret->ptr = NULL;
    ret->len = 0;
}

/* A one-entry string map holding (key, value), both moved in. */
static wasmgate_plugin_cri_types_string_map_t one_pair(inject_buf *key, inject_buf *value) {
    wasmgate_plugin_cri_types_string_map_t map;
    map.ptr = xmalloc(sizeof *map.ptr);
    map.ptr[0].f0 = to_wit(key);
    map.ptr[0].f1 = to_wit(value);
    map.len = 1;
    return map;
}

void exports_wasmgate_plugin_hook_pre(exports_wasmgate_plugin_hook_request_t *req,
                                      exports_wasmgate_plugin_hook_decision_t *ret) {
    /* Only the kind of request matters; the request itself is ours to free. */
    bool create = req->tag == WASMGATE_PLUGIN_CRI_TYPES_REQUEST_CREATE_CONTAINER;
    free_request(req);

    memset(ret, 0, sizeof *ret);
    if (!create) {
        /* The host calls only for subscribed events; anything else is allowed untouched. */
        ret->tag = WASMGATE_PLUGIN_CRI_TYPES_DECISION_ALLOW;
        return;
    }

    inject_decision d;
    inject_create_container(&WASI_SETTINGS, &d);
    switch (d.kind) {
    case INJECT_ALLOW:
        ret->tag = WASMGATE_PLUGIN_CRI_TYPES_DECISION_ALLOW;
        break;
    case INJECT_DENY:
        ret->tag = WASMGATE_PLUGIN_CRI_TYPES_DECISION_DENY;
        ret->val.deny = to_wit(&d.reason);
        break;
    case INJECT_ADJUST: {
        ret->tag = WASMGATE_PLUGIN_CRI_TYPES_DECISION_ADJUST;
        /* Zeroed (by the memset above): every other list empty, every option none. */
        adjustment_t *a = &ret->val.adjust;
        if (d.has_env) {
            a->env = one_pair(&d.env_name, &d.env_value);
        }
        if (d.has_annotation) {
            a->annotations = one_pair(&d.annotation_key, &d.annotation_value);
        }
        break;
    }
    }
    /* Frees what was not moved into the answer (nothing, unless a case above skipped a field). */
    inject_decision_free(&d);
}

void exports_wasmgate_plugin_hook_post(exports_wasmgate_plugin_hook_request_t *req,
                                       exports_wasmgate_plugin_hook_outcome_t *outcome) {
    /* Nothing to do after the call, and post_subscriptions() keeps the host from calling this;
     * but the world requires the export, and a direct call's arguments are ours to free. The
     * generated outcome free is complete (a string, or a u32 and a string). */
    free_request(req);
    exports_wasmgate_plugin_hook_outcome_free(outcome);
}
