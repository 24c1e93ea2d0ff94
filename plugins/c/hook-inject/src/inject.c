/*
 * hook-inject's logic: reading the keys and making the decision (see inject.h). A port of
 * plugins/rust/hook-inject/src/inject.rs and settings.rs that gives the same decisions, messages
 * included, for the same configuration.
 */
#include "inject.h"

#include <stdlib.h>
#include <string.h>

/* ---- memory ------------------------------------------------------------------------------- */

/*
 * Running out of memory traps (abort() is `unreachable` on wasm), as a Rust plugin's allocation
 * failure does: there is no right decision to return without memory, and the host applies the
 * hook's failure policy to a trap.
 */
static void *xrealloc(void *p, size_t n) {
    void *r = realloc(p, n);
    if (r == NULL) {
        abort();
    }
    return r;
}

void inject_buf_free(inject_buf *b) {
    if (b->len > 0) {
        free(b->ptr);
    }
    b->ptr = NULL;
    b->len = 0;
}

/* A fresh copy of s[0..n); empty (no allocation) when n is 0. */
static inject_buf copy(const void *s, size_t n) {
    inject_buf b = {NULL, 0};
    if (n > 0) {
        b.ptr = xrealloc(NULL, n);
        memcpy(b.ptr, s, n);
        b.len = n;
    }
    return b;
}

static inject_buf copy_cstr(const char *s) {
    return copy(s, strlen(s));
}

/* Takes the contents of *b, leaving it empty: for moving a buffer into the decision. */
static inject_buf take(inject_buf *b) {
    inject_buf out = *b;
    b->ptr = NULL;
    b->len = 0;
    return out;
}

/* A growing string for messages. Its buffer keeps the inject_buf rule (ptr NULL iff len 0)
 * because nothing is allocated before the first non-empty push. */
typedef struct builder {
    inject_buf buf;
    size_t cap;
} builder;

static void push(builder *b, const void *bytes, size_t n) {
    if (n == 0) {
        return;
    }
    if (n > SIZE_MAX - b->buf.len) {
        abort(); /* cannot happen with wasm32's 4 GiB, but never wrap a size */
    }
    size_t need = b->buf.len + n;
    if (need > b->cap) {
        size_t cap = b->cap > 0 ? b->cap : 64;
        while (cap < need) {
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        }
        b->buf.ptr = xrealloc(b->buf.ptr, cap);
        b->cap = cap;
    }
    memcpy(b->buf.ptr + b->buf.len, bytes, n);
    b->buf.len = need;
}

static void push_cstr(builder *b, const char *s) {
    push(b, s, strlen(s));
}

static void push_byte(builder *b, uint8_t c) {
    push(b, &c, 1);
}

/* ---- UTF-8 ------------------------------------------------------------------------------- */

/*
 * Decodes the code point at the start of s[0..len). Returns its length in bytes, or 0 when the
 * bytes there are not well-formed UTF-8 (truncated, overlong, a surrogate, past U+10FFFF). WIT
 * strings are valid UTF-8, so 0 only guards against reading past the end.
 */
static size_t utf8_decode(const uint8_t *s, size_t len, uint32_t *cp) {
    if (len == 0) {
        return 0;
    }
    uint8_t c = s[0];
    size_t n;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        n = 2, v = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3, v = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len < n) {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            return 0;
        }
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        return 0;
    }
    *cp = v;
    return n;
}

/* Unicode's White_Space property, which Rust's char::is_whitespace (so str::trim) uses. */
static bool is_white_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

const uint8_t *inject_trim(const uint8_t *s, size_t *len) {
    size_t start = 0, end = *len;
    if (end == 0) {
        return s;
    }
    while (start < end) {
        uint32_t cp;
        size_t n = utf8_decode(s + start, end - start, &cp);
        if (n == 0 || !is_white_space(cp)) {
            break;
        }
        start += n;
    }
    while (end > start) {
        /* The last code point starts at the last byte that is not a continuation byte (at most
         * 3 back); it must then run exactly to the end. */
        size_t lead = end - 1;
        while (lead > start && end - lead < 4 && (s[lead] & 0xC0) == 0x80) {
            lead--;
        }
        uint32_t cp;
        size_t n = utf8_decode(s + lead, end - lead, &cp);
        if (n != end - lead || !is_white_space(cp)) {
            break;
        }
        end = lead;
    }
    *len = end - start;
    return s + start;
}

/* Trims *b in place (moving the text to the front of its allocation), as settings::string does. */
static void trim_in_place(inject_buf *b) {
    size_t n = b->len;
    const uint8_t *start = inject_trim(b->ptr, &n);
    if (n == 0) {
        inject_buf_free(b); /* keep the rule: an empty buffer owns nothing */
        return;
    }
    memmove(b->ptr, start, n);
    b->len = n;
}

/* ---- Rust's {:?} for strings ----------------------------------------------------------------- */

/* `\u{<hex>}`, lower-case and without leading zeros, as Rust's char::escape_debug writes it. */
static void push_unicode_escape(builder *b, uint32_t cp) {
    static const char hex[] = "0123456789abcdef";
    char digits[8];
    size_t n = 0;
    do {
        digits[n++] = hex[cp & 0xF];
        cp >>= 4;
    } while (cp != 0 && n < sizeof digits);
    push_cstr(b, "\\u{");
    while (n > 0) {
        push_byte(b, (uint8_t)digits[--n]);
    }
    push_byte(b, '}');
}

/*
 * Appends s quoted and escaped as Rust's `format!("{:?}", s)`: `\0 \t \r \n \\ \"` by name, and
 * the C0 and C1 control characters and DEL as `\u{..}`. The one difference: Rust also escapes
 * the other characters it deems unprintable or grapheme-extending (e.g. U+200B, a combining
 * accent) by Unicode tables this port does not carry; they are written as they are.
 */
static void push_debug_quoted(builder *b, const uint8_t *s, size_t len) {
    push_byte(b, '"');
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c >= 0x80) {
            uint32_t cp;
            size_t n = utf8_decode(s + i, len - i, &cp);
            if (n == 0) {
                /* Not UTF-8 (a WIT string never is): write the byte as it is and go on. */
                push_byte(b, c);
                i++;
            } else if (cp <= 0x9F) {
                push_unicode_escape(b, cp); /* C1 controls */
                i += n;
            } else {
                push(b, s + i, n);
                i += n;
            }
            continue;
        }
        switch (c) {
        case '\0': push_cstr(b, "\\0"); break;
        case '\t': push_cstr(b, "\\t"); break;
        case '\r': push_cstr(b, "\\r"); break;
        case '\n': push_cstr(b, "\\n"); break;
        case '\\': push_cstr(b, "\\\\"); break;
        case '"': push_cstr(b, "\\\""); break;
        default:
            if (c < 0x20 || c == 0x7F) {
                push_unicode_escape(b, c);
            } else {
                push_byte(b, c);
            }
        }
        i++;
    }
    push_byte(b, '"');
}

/* ---- the decision ------------------------------------------------------------------------- */

/*
 * settings::string: the trimmed value of `key` into *out. On INJECT_FAILED, *out is the whole
 * reason, "cannot read wasi:config key <key>: <why>", as the Rust hook words it.
 */
static inject_read read_setting(const inject_settings *settings, const char *key, inject_buf *out) {
    inject_buf got = {NULL, 0};
    inject_read r = settings->get(settings->ctx, key, &got);
    switch (r) {
    case INJECT_SET:
        trim_in_place(&got);
        *out = got;
        return INJECT_SET;
    case INJECT_FAILED: {
        builder b = {{NULL, 0}, 0};
        push_cstr(&b, "cannot read wasi:config key ");
        push_cstr(&b, key);
        push_cstr(&b, ": ");
        push(&b, got.ptr, got.len);
        inject_buf_free(&got);
        *out = b.buf;
        return INJECT_FAILED;
    }
    case INJECT_UNSET:
    default:
        /* An UNSET that still filled the buffer would leak it; free it to be safe. */
        inject_buf_free(&got);
        out->ptr = NULL;
        out->len = 0;
        return INJECT_UNSET;
    }
}

/* Denies with "hook-inject: <why>", consuming `why`. */
static void deny(inject_decision *out, inject_buf *why) {
    builder b = {{NULL, 0}, 0};
    push_cstr(&b, "hook-inject: ");
    push(&b, why->ptr, why->len);
    inject_buf_free(why);
    out->kind = INJECT_DENY;
    out->reason = b.buf;
}

static bool contains(const inject_buf *b, uint8_t c) {
    return b->len > 0 && memchr(b->ptr, c, b->len) != NULL;
}

void inject_create_container(const inject_settings *settings, inject_decision *out) {
    memset(out, 0, sizeof *out);
    inject_buf env_name = {NULL, 0}, annotation_key = {NULL, 0}, value = {NULL, 0};

    /* The keys are read in the Rust hook's order, so a failing store names the same key. */
    switch (read_setting(settings, INJECT_KEY_ENV_NAME, &env_name)) {
    case INJECT_FAILED:
        deny(out, &env_name);
        goto done;
    case INJECT_UNSET:
        env_name = copy_cstr(INJECT_DEFAULT_ENV_NAME);
        break;
    case INJECT_SET:
        break;
    }
    switch (read_setting(settings, INJECT_KEY_ANNOTATION_KEY, &annotation_key)) {
    case INJECT_FAILED:
        deny(out, &annotation_key);
        goto done;
    case INJECT_UNSET:
        annotation_key = copy_cstr(INJECT_DEFAULT_ANNOTATION_KEY);
        break;
    case INJECT_SET:
        break;
    }

    /* Set but empty means "set none"; both empty leaves nothing to do. */
    if (env_name.len == 0 && annotation_key.len == 0) {
        out->kind = INJECT_ALLOW;
        goto done;
    }
    /* A name with '=' would be split differently by the runtime and by the container's libc,
     * and NUL cannot pass execve: refuse rather than inject something other than what was configured. */
    if (contains(&env_name, '=') || contains(&env_name, '\0')) {
        builder b = {{NULL, 0}, 0};
        push_cstr(&b, "hook-inject: " INJECT_KEY_ENV_NAME " ");
        push_debug_quoted(&b, env_name.ptr, env_name.len);
        push_cstr(&b, " is not a valid environment variable name");
        out->kind = INJECT_DENY;
        out->reason = b.buf;
        goto done;
    }

    /* `value`, else `node-name`, else "unknown"; `node-name` is read only when `value` is unset. */
    switch (read_setting(settings, INJECT_KEY_VALUE, &value)) {
    case INJECT_FAILED:
        deny(out, &value);
        goto done;
    case INJECT_SET:
        break;
    case INJECT_UNSET:
        switch (read_setting(settings, INJECT_KEY_NODE_NAME, &value)) {
        case INJECT_FAILED:
            deny(out, &value);
            goto done;
        case INJECT_UNSET:
            value = copy_cstr(INJECT_DEFAULT_VALUE);
            break;
        case INJECT_SET:
            break;
        }
        break;
    }

    /* Each half gets its own copy of the value: the bindings free every string of the returned
     * decision separately, so two of them must never share an allocation. */
    out->kind = INJECT_ADJUST;
    if (env_name.len > 0) {
        out->has_env = true;
        out->env_name = take(&env_name);
        out->env_value = copy(value.ptr, value.len);
    }
    if (annotation_key.len > 0) {
        out->has_annotation = true;
        out->annotation_key = take(&annotation_key);
        out->annotation_value = copy(value.ptr, value.len);
    }

done:
    inject_buf_free(&env_name);
    inject_buf_free(&annotation_key);
    inject_buf_free(&value);
}

void inject_decision_free(inject_decision *d) {
    inject_buf_free(&d->reason);
    inject_buf_free(&d->env_name);
    inject_buf_free(&d->env_value);
    inject_buf_free(&d->annotation_key);
    inject_buf_free(&d->annotation_value);
    d->kind = INJECT_ALLOW;
    d->has_env = false;
    d->has_annotation = false;
}
