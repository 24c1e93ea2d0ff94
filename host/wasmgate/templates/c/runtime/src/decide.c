/* The decision; see decide.h. */
#include "decide.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* A growing buffer. Running out of memory traps (abort): there is no honest answer to give. */
typedef struct {
    uint8_t *ptr;
    size_t len, cap;
} builder;

static void push(builder *b, const void *bytes, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->len + n) {
            cap *= 2;
        }
        uint8_t *p = realloc(b->ptr, cap);
        if (p == NULL) {
            abort();
        }
        b->ptr = p;
        b->cap = cap;
    }
    if (n > 0) {
        memcpy(b->ptr + b->len, bytes, n);
    }
    b->len += n;
}

static void push_str(builder *b, const char *s) { push(b, s, strlen(s)); }

/* Quoted as Rust's `{:?}` quotes a string: `"` and `\` escaped, control characters escaped. */
static void push_quoted(builder *b, const uint8_t *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    push_str(b, "\"");
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        switch (c) {
        case '"': push_str(b, "\\\""); break;
        case '\\': push_str(b, "\\\\"); break;
        case '\n': push_str(b, "\\n"); break;
        case '\r': push_str(b, "\\r"); break;
        case '\t': push_str(b, "\\t"); break;
        case '\0': push_str(b, "\\0"); break;
        default:
            if (c < 0x20 || c == 0x7f) {
                char esc[] = {'\\', 'u', '{', hex[c >> 4], hex[c & 15], '}'};
                push(b, esc, sizeof esc);
            } else {
                push(b, &c, 1);
            }
        }
    }
    push_str(b, "\"");
}

static decide_buf finish(builder *b) {
    decide_buf out = {b->ptr, b->len};
    if (out.len == 0) {
        free(out.ptr);
        out.ptr = NULL;
    }
    return out;
}

static decide_buf copy(const uint8_t *s, size_t n) {
    builder b = {0};
    push(&b, s, n);
    return finish(&b);
}

/* ASCII white space, as Rust's str::trim trims it for ASCII (not its Unicode spaces). */
static bool space(uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

static void trim(const uint8_t **s, size_t *n) {
    while (*n > 0 && space((*s)[0])) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && space((*s)[*n - 1])) {
        (*n)--;
    }
}

void decide(const setting *s, decision *out) {
    memset(out, 0, sizeof *out);
    if (s->state == SETTING_UNSET) {
        out->kind = DECIDE_ALLOW;
        return;
    }
    builder reason = {0};
    if (s->state == SETTING_FAILED) {
        push_str(&reason, PLUGIN_NAME ": read wasi:config key " ANNOTATION_KEY ": ");
        push(&reason, s->text, s->len);
        out->kind = DECIDE_DENY;
        out->reason = finish(&reason);
        return;
    }
    const uint8_t *eq = s->len > 0 ? memchr(s->text, '=', s->len) : NULL;
    const uint8_t *key = s->text;
    size_t key_len = eq ? (size_t)(eq - s->text) : 0;
    trim(&key, &key_len);
    if (eq == NULL || key_len == 0) {
        push_str(&reason, PLUGIN_NAME ": wasi:config key " ANNOTATION_KEY " is ");
        push_quoted(&reason, s->text, s->len);
        push_str(&reason, ", not KEY=VALUE");
        out->kind = DECIDE_DENY;
        out->reason = finish(&reason);
        return;
    }
    const uint8_t *value = eq + 1;
    size_t value_len = s->len - (size_t)(value - s->text);
    trim(&value, &value_len);
    out->kind = DECIDE_ADJUST;
    out->key = copy(key, key_len);
    out->value = copy(value, value_len);
}

void decision_free(decision *d) {
    free(d->reason.ptr);
    free(d->key.ptr);
    free(d->value.ptr);
    memset(d, 0, sizeof *d);
}
