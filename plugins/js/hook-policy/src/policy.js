// The policy: which containers are refused, and why. Pure logic, no imports, so that
// `node --test` runs it as is (test/policy.test.js) and index.js only wires wasi:config into it.
//
// A port of plugins/rust/hook-policy/src/policy.rs and settings.rs: same keys, same defaults,
// same decisions, same reasons, character for character. Values use jco's JS mapping of the WIT
// types: records have camelCase fields, a variant is `{ tag, val }`, an enum is its case name.
//
// The keys, from wasi:config (separated by commas and/or whitespace):
// - `allowed-namespaces`, default `kube-system`: namespaces exempt from the policy; set but
//   empty exempts none;
// - `deny-capabilities`, default none: capabilities a container may not add outside those
//   namespaces; `ALL` means any.

export const ALLOWED_NAMESPACES = 'allowed-namespaces';
export const DENY_CAPABILITIES = 'deny-capabilities';
export const DEFAULT_ALLOWED_NAMESPACES = 'kube-system';

/** The decision that lets a call through unchanged. */
export const ALLOW = Object.freeze({ tag: 'allow' });

/** Refuses the call; the host turns `reason` into a PERMISSION_DENIED status. */
export function deny(reason) {
  return { tag: 'deny', val: reason };
}

/**
 * Thrown by `list` when a key cannot be read. A class of its own so that `pre` turns exactly
 * this into a deny (fail closed) and lets a bug in this file trap instead, which the host
 * reports as the hook failing rather than as a policy decision.
 */
export class ConfigError extends Error {}

/** The events this hook wants: create-container, the one call that carries a security context. */
export function subscriptions() {
  return ['create-container'];
}

/** None: the hook only decides, so the host need not call `post` after the runtime answers. */
export function postSubscriptions() {
  return [];
}

/**
 * The pre-hook. `settings.get(key)` returns the value, `undefined` when the key is not set, and
 * throws (any error; its message is the reason) when the store cannot be read.
 */
export function pre(req, settings) {
  if (req.tag !== 'create-container') {
    return ALLOW;
  }
  const [pod, container] = req.val;
  try {
    return checkContainer(pod, container, settings);
  } catch (e) {
    if (e instanceof ConfigError) {
      return deny(`hook-policy: ${e.message}`);
    }
    throw e;
  }
}

function checkContainer(pod, container, settings) {
  const security = container.security;
  // Nothing to check: answer without touching the config, so an ordinary container never
  // depends on the store being reachable.
  if (!security.privileged && security.addCapabilities.length === 0) {
    return ALLOW;
  }

  const allowed = list(settings, ALLOWED_NAMESPACES) ?? [DEFAULT_ALLOWED_NAMESPACES];
  if (allowed.includes(pod.namespace)) {
    return ALLOW;
  }
  const allowedText = allowed.length === 0 ? 'none' : allowed.join(', ');
  const where = `in namespace ${rustDebugString(pod.namespace)} (allowed: ${allowedText})`;

  // Privileged wins: it grants every capability anyway, so it is the reason worth reading.
  if (security.privileged) {
    return deny(`privileged containers are not allowed ${where}`);
  }

  const denied = (list(settings, DENY_CAPABILITIES) ?? []).map(capability);
  if (denied.length === 0) {
    return ALLOW;
  }
  for (const cap of security.addCapabilities.map(capability)) {
    // `ALL` on either side covers every capability.
    if (cap === 'ALL' || denied.some((d) => d === cap || d === 'ALL')) {
      return deny(`capability ${cap} is not allowed ${where}`);
    }
  }
  return ALLOW;
}

/**
 * The canonical spelling of a capability: upper case, without the `CAP_` prefix, so that
 * `sys_admin`, `SYS_ADMIN` and `CAP_SYS_ADMIN` are one capability. ASCII-only upper-casing, as
 * Rust's `to_ascii_uppercase`: `toUpperCase` would turn `ß` into `SS` and disagree.
 */
export function capability(name) {
  const upper = trim(name).replace(/[a-z]+/g, (s) => s.toUpperCase());
  return upper.startsWith('CAP_') ? upper.slice(4) : upper;
}

/**
 * A list key: `undefined` when the key is not set (so the caller picks the default), `[]` when
 * it is set but empty. Throws ConfigError naming the key when it cannot be read.
 */
export function list(settings, key) {
  let value;
  try {
    value = settings.get(key);
  } catch (e) {
    throw new ConfigError(`cannot read wasi:config key ${key}: ${e?.message ?? e}`);
  }
  return value === undefined || value === null ? undefined : splitList(value);
}

// Unicode White_Space, the set Rust's `char::is_whitespace` and `str::trim` use. JS's `\s` and
// `String.prototype.trim` differ from it (they include U+FEFF and leave out U+0085), so it is
// spelled out to keep both ports splitting alike.
const WS =
  '\\u0009-\\u000d\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const SEPARATORS = new RegExp(`[,${WS}]`);
const EDGES = new RegExp(`^[${WS}]+|[${WS}]+$`, 'g');

function trim(s) {
  return s.replace(EDGES, '');
}

/**
 * Splits at commas and whitespace, dropping empty entries. Whitespace separates too because the
 * stock wasmtime CLI splits every `-S` option at commas, so `-S config-var=k=a,b` cannot carry a
 * comma, but `-S 'config-var=k=a b'` can.
 */
export function splitList(value) {
  return value.split(SEPARATORS).filter((s) => s !== '');
}

/**
 * `s` quoted as Rust's `{:?}` prints it, which the Rust hook uses for the namespace in its
 * reasons: backslash, double quote, \t \r \n \0 escaped, other control characters as \u{hex}.
 * (Rust also escapes some unprintable non-control code points; a namespace is a DNS label and
 * holds none, so they are left as they are.)
 */
export function rustDebugString(s) {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0);
    if (ch === '\\' || ch === '"') out += `\\${ch}`;
    else if (ch === '\t') out += '\\t';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\n') out += '\\n';
    else if (c === 0) out += '\\0';
    else if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) out += `\\u{${c.toString(16)}}`;
    else out += ch;
  }
  return `${out}"`;
}
