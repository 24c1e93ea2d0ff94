/* Unit tests of src/decide.c, natively with ASan and UBSan: `./build --test`. Each test is a
 * function; a failed check names its line. */
#include <stdio.h>
#include <string.h>

#include "decide.c"

static int failed_checks;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
            failed_checks++;                                                           \
        }                                                                              \
    } while (0)

static setting set(const char *value) {
    setting s = {SETTING_SET, (const uint8_t *)value, strlen(value)};
    return s;
}

static int eq(decide_buf b, const char *want) {
    return b.len == strlen(want) && (b.len == 0 || memcmp(b.ptr, want, b.len) == 0);
}

/* A list of decide.h as one string: its events' names, each followed by a space. */
#define EVENT_NAME(name) #name " "

static void subscribes_to_new_containers_and_allows_them_without_the_key(void) {
    CHECK(strcmp("" SUBSCRIPTIONS(EVENT_NAME), "CREATE_CONTAINER ") == 0);
    CHECK(strcmp("" POST_SUBSCRIPTIONS(EVENT_NAME), "") == 0);

    setting s = {SETTING_UNSET, NULL, 0};
    decision d;
    decide(&s, &d);
    CHECK(d.kind == DECIDE_ALLOW);
    decision_free(&d);
}

static void annotates_with_the_key(void) {
    setting s = set("example.com/team = a=b");
    decision d;
    decide(&s, &d);
    CHECK(d.kind == DECIDE_ADJUST);
    CHECK(eq(d.key, "example.com/team"));
    CHECK(eq(d.value, "a=b"));
    decision_free(&d);

    s = set("k=");
    decide(&s, &d);
    CHECK(d.kind == DECIDE_ADJUST && eq(d.value, "") && d.value.ptr == NULL);
    decision_free(&d);
}

static void denies_a_malformed_key_naming_it(void) {
    const char *bad[] = {"no-equals", "=value", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setting s = set(bad[i]);
        decision d;
        decide(&s, &d);
        CHECK(d.kind == DECIDE_DENY);
        CHECK(d.reason.len > strlen(PLUGIN_NAME) &&
              memcmp(d.reason.ptr, PLUGIN_NAME, strlen(PLUGIN_NAME)) == 0);
        decision_free(&d);
    }
    setting s = set("team-a");
    decision d;
    decide(&s, &d);
    CHECK(eq(d.reason, PLUGIN_NAME ": wasi:config key annotation is \"team-a\", not KEY=VALUE"));
    decision_free(&d);

    setting gone = {SETTING_FAILED, (const uint8_t *)"gone", 4};
    decide(&gone, &d);
    CHECK(d.kind == DECIDE_DENY);
    CHECK(eq(d.reason, PLUGIN_NAME ": read wasi:config key annotation: gone"));
    decision_free(&d);
}

int main(void) {
    void (*tests[])(void) = {subscribes_to_new_containers_and_allows_them_without_the_key,
                             annotates_with_the_key, denies_a_malformed_key_naming_it};
    int n = sizeof tests / sizeof tests[0], failed = 0;
    for (int i = 0; i < n; i++) {
        int before = failed_checks;
        tests[i]();
        failed += failed_checks != before;
    }
    printf("decide_test: %d passed, %d failed\n", n - failed, failed);
    return failed != 0;
}
