// `{{name}}`: the decision of a wasmgate CRI runtime hook (`{{world_id}}`), plain JavaScript
// with no imports so `node --test` runs it natively; src/index.js wires it to the world.
//
// What it does, as `wasmgate plugin new` wrote it: it subscribes to `create-container`, and
// allows every new container, adding one container annotation when the `wasi:config` key
// `annotation` holds `KEY=VALUE`. A malformed value denies the call, naming the key, rather than
// letting a container start without what the operator asked for. It wants no outcomes.

export const NAME = '{{name}}';

/** The `wasi:config` key: `KEY=VALUE`, an annotation for every new container. */
export const ANNOTATION = 'annotation';

export const ALLOW = Object.freeze({ tag: 'allow' });

/** The events whose requests `pre` judges. */
export function subscriptions() {
  return ['create-container'];
}

/**
 * The events whose outcome `post` wants. None: `post` does nothing with an outcome, and a hook
 * that only judges requests costs nothing after the runtime answers.
 */
export function postSubscriptions() {
  return [];
}

/**
 * The decision for a request. `settings.get(key)` returns the value or `undefined`, and throws
 * an Error when the store cannot be read. Read on every call: an operator may change the key.
 */
export function pre(req, settings) {
  if (req.tag !== 'create-container') {
    return ALLOW;
  }
  let setting;
  try {
    setting = settings.get(ANNOTATION);
  } catch (e) {
    return { tag: 'deny', val: `${NAME}: read wasi:config key ${ANNOTATION}: ${e.message}` };
  }
  return decide(setting);
}

/** The decision for a new container, given the `annotation` setting (`undefined`: not set). */
export function decide(setting) {
  if (setting === undefined) {
    return ALLOW;
  }
  const eq = setting.indexOf('=');
  const key = eq < 0 ? '' : setting.slice(0, eq).trim();
  if (key === '') {
    // JSON's quoting, which is Rust's `{:?}` for what a config value usually holds.
    const quoted = JSON.stringify(setting);
    return { tag: 'deny', val: `${NAME}: wasi:config key ${ANNOTATION} is ${quoted}, not KEY=VALUE` };
  }
  return { tag: 'adjust', val: annotate(key, setting.slice(eq + 1).trim()) };
}

/** An adjustment that sets one annotation; the fields left empty change nothing. */
export function annotate(key, value) {
  return {
    annotations: [[key, value]],
    removeAnnotations: [],
    labels: [],
    removeLabels: [],
    env: [],
    removeEnv: [],
    mounts: [],
    removeMounts: [],
    devices: [],
    removeDevices: [],
    resources: undefined,
    args: undefined,
    image: undefined,
  };
}
