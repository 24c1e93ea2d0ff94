// `{{name}}`: a wasmgate CRI runtime hook, the component's entry point for the world
// `{{world_id}}` (wit/runtime.wit).
//
// The host's CRI proxy asks for two lists of events once per loaded version: `subscriptions()`,
// the calls `pre` judges before the runtime sees them (allow, deny or adjust them), and
// `post-subscriptions()`, the calls whose outcome `post` sees after the runtime answered.
// The host may reuse an instance after a call succeeds, so anything that must last goes in
// `wasi:keyvalue`. This file is only the wiring; the decision is in hook.js. componentize-js
// evaluates this module once, at build time, so nothing here may read the config at top level.
//
// See wasmgate's `plugins/js/hook-policy` and `plugins/rust/hook-inject` for more.

import { get } from 'wasi:config/store@0.2.0-rc.1';
import * as logic from './hook.js';

/**
 * `wasi:config/store` as hook.js wants it: the value, or `undefined` for a missing key. An
 * `err(error)` arrives as a thrown value whose payload is the WIT `error` variant
 * (`{ tag: 'upstream' | 'io', val: string }`); rethrow its text.
 */
const wasiSettings = {
  get(key) {
    try {
      return get(key);
    } catch (e) {
      const err = e?.payload ?? e;
      throw new Error(typeof err?.val === 'string' ? err.val : String(err?.message ?? err));
    }
  },
};

// The exported interface `wasmgate:plugin/hook`, by its bare name; jco names its functions in
// lowerCamelCase (`post-subscriptions` is `postSubscriptions`).
export const hook = {
  subscriptions() {
    return logic.subscriptions();
  },

  postSubscriptions() {
    return logic.postSubscriptions();
  },

  pre(req) {
    return logic.pre(req, wasiSettings);
  },

  // The world requires it, though the host calls it for no event while postSubscriptions() is
  // empty.
  post(_req, _outcome) {},
};
