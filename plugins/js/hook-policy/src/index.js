// hook-policy, in JavaScript: the component's entry point for the world
// `wasmgate:plugin/runtime-hook@0.3.0` (wit/v0.3.0/runtime.wit at the repository root).
//
// This file is only the wiring: it exports the `hook` interface and hands `wasi:config/store`
// to the pure policy in policy.js, as lib.rs does for the Rust hook. componentize-js bundles the
// relative import and evaluates this module once, at build time (Wizer snapshot), so nothing
// here may read the config at top level: the host's keys exist only during a call.

import { get } from 'wasi:config/store@0.2.0-rc.1';
import * as policy from './policy.js';

/**
 * `wasi:config/store` as the policy wants it. `get` returns the value, or `undefined` for a
 * missing key; an `err(error)` result arrives as a thrown value whose payload is the WIT
 * `error` variant (`{ tag: 'upstream' | 'io', val: string }`). Throw its text, as lib.rs maps
 * `Error::Upstream(msg) | Error::Io(msg)` to `msg`.
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

// The exported interface `wasmgate:plugin/hook@0.3.0`, by its bare name; jco names its
// functions in lowerCamelCase (`post-subscriptions` is `postSubscriptions`).
export const hook = {
  subscriptions() {
    return policy.subscriptions();
  },

  postSubscriptions() {
    return policy.postSubscriptions();
  },

  // Read the config on every call: the host may reuse an instance, and an operator may have
  // changed the keys in between.
  pre(req) {
    return policy.pre(req, wasiSettings);
  },

  // Nothing to do after the call: this hook only decides. postSubscriptions() is empty, so the
  // host never calls this; the world still requires the export.
  post(_req, _outcome) {},
};
