// Unit tests of the policy, natively under Node (`node --test plugins/js/hook-policy/test/`),
// the same cases as plugins/rust/hook-policy/src/policy.rs and settings.rs, so that the two
// ports are held to one behaviour. The component as a whole is tested through the daemon and
// the stock wasmtime CLI by tests/tests/policy_hooks.rs.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  ALLOW,
  ALLOWED_NAMESPACES,
  DENY_CAPABILITIES,
  capability,
  list,
  postSubscriptions,
  pre,
  rustDebugString,
  splitList,
  subscriptions,
} from '../src/policy.js';

/** Settings from a map; a key mapped to an Error fails to read, and reads are counted. */
function settings(pairs = {}) {
  const s = {
    reads: [],
    get(key) {
      s.reads.push(key);
      const v = pairs[key];
      if (v instanceof Error) throw v;
      return v;
    },
  };
  return s;
}

const pod = (namespace) => ({
  id: '',
  name: 'p',
  namespace,
  uid: 'u',
  labels: [],
  annotations: [],
  runtimeHandler: '',
});

const container = (privileged, add = []) => ({
  id: '',
  name: 'c',
  image: 'busybox',
  command: [],
  args: [],
  env: [],
  mounts: [],
  devices: [],
  resources: undefined,
  security: {
    privileged,
    runAsUser: undefined,
    addCapabilities: add,
    dropCapabilities: [],
    readonlyRootfs: false,
  },
  labels: [],
  annotations: [],
  workingDir: '',
});

const create = (ns, privileged, add) => ({
  tag: 'create-container',
  val: [pod(ns), container(privileged, add)],
});

const deny = (val) => ({ tag: 'deny', val });

test('subscribes to create-container only', () => {
  assert.deepEqual(subscriptions(), ['create-container']);
});

test('wants no post call', () => {
  assert.deepEqual(postSubscriptions(), []);
});

test('an ordinary container is allowed without reading the config', () => {
  const s = settings({ [ALLOWED_NAMESPACES]: new Error('unreachable') });
  assert.deepEqual(pre(create('default', false, []), s), ALLOW);
  assert.deepEqual(s.reads, []);
});

test('privileged is denied outside the default allow-list', () => {
  assert.deepEqual(
    pre(create('default', true, []), settings()),
    deny('privileged containers are not allowed in namespace "default" (allowed: kube-system)'),
  );
});

test('privileged is allowed in kube-system by default', () => {
  assert.deepEqual(pre(create('kube-system', true, []), settings()), ALLOW);
});

test('the allow-list from the config replaces the default', () => {
  const s = settings({ [ALLOWED_NAMESPACES]: ' monitoring , ci ' });
  assert.deepEqual(pre(create('ci', true, []), s), ALLOW);
  assert.deepEqual(
    pre(create('kube-system', true, []), s),
    deny('privileged containers are not allowed in namespace "kube-system" (allowed: monitoring, ci)'),
  );
});

test('an empty allow-list exempts nobody', () => {
  assert.deepEqual(
    pre(create('kube-system', true, []), settings({ [ALLOWED_NAMESPACES]: '' })),
    deny('privileged containers are not allowed in namespace "kube-system" (allowed: none)'),
  );
});

test('capabilities are allowed when the deny-list is unset', () => {
  assert.deepEqual(pre(create('default', false, ['SYS_ADMIN']), settings()), ALLOW);
});

test('a denied capability is refused in any spelling', () => {
  const s = settings({ [DENY_CAPABILITIES]: 'SYS_ADMIN, net_admin' });
  for (const add of ['SYS_ADMIN', 'sys_admin', 'CAP_SYS_ADMIN']) {
    assert.deepEqual(
      pre(create('default', false, ['CHOWN', add]), s),
      deny('capability SYS_ADMIN is not allowed in namespace "default" (allowed: kube-system)'),
      add,
    );
  }
  assert.deepEqual(
    pre(create('default', false, ['CAP_NET_ADMIN']), s),
    deny('capability NET_ADMIN is not allowed in namespace "default" (allowed: kube-system)'),
  );
  assert.deepEqual(pre(create('default', false, ['CHOWN', 'NET_BIND_SERVICE']), s), ALLOW);
});

test('a denied capability is allowed in an allow-listed namespace', () => {
  const s = settings({ [DENY_CAPABILITIES]: 'SYS_ADMIN' });
  assert.deepEqual(pre(create('kube-system', false, ['SYS_ADMIN']), s), ALLOW);
});

test('ALL covers every capability', () => {
  assert.deepEqual(
    pre(create('default', false, ['CHOWN']), settings({ [DENY_CAPABILITIES]: 'ALL' })),
    deny('capability CHOWN is not allowed in namespace "default" (allowed: kube-system)'),
  );
  assert.deepEqual(
    pre(create('default', false, ['all']), settings({ [DENY_CAPABILITIES]: 'SYS_ADMIN' })),
    deny('capability ALL is not allowed in namespace "default" (allowed: kube-system)'),
  );
});

test('the privileged reason wins over capabilities', () => {
  const s = settings({ [DENY_CAPABILITIES]: 'SYS_ADMIN' });
  assert.deepEqual(
    pre(create('default', true, ['SYS_ADMIN']), s),
    deny('privileged containers are not allowed in namespace "default" (allowed: kube-system)'),
  );
});

test('an unreadable config fails closed, naming the key', () => {
  assert.deepEqual(
    pre(create('kube-system', true, []), settings({ [ALLOWED_NAMESPACES]: new Error('store down') })),
    deny('hook-policy: cannot read wasi:config key allowed-namespaces: store down'),
  );
  assert.deepEqual(
    pre(create('default', false, ['CHOWN']), settings({ [DENY_CAPABILITIES]: new Error('store down') })),
    deny('hook-policy: cannot read wasi:config key deny-capabilities: store down'),
  );
});

test('a bug is not mistaken for a policy decision', () => {
  // Only an unreadable key becomes a deny; anything else propagates (the host sees a trap).
  const broken = { get() { throw new Error('x'); } };
  const req = { tag: 'create-container', val: [pod('default'), { security: null }] };
  assert.throws(() => pre(req, broken), TypeError);
});

test('other requests are allowed', () => {
  const s = settings();
  assert.deepEqual(pre({ tag: 'run-pod', val: pod('default') }, s), ALLOW);
  assert.deepEqual(
    pre({ tag: 'start-container', val: [pod('default'), container(true)] }, s),
    ALLOW,
  );
  assert.deepEqual(
    pre({ tag: 'pull-image', val: { image: 'busybox', annotations: [], pod: undefined } }, s),
    ALLOW,
  );
});

test('capability spelling', () => {
  assert.equal(capability(' cap_sys_admin '), 'SYS_ADMIN');
  assert.equal(capability('NET_RAW'), 'NET_RAW');
  // ASCII-only upper-casing, as Rust's to_ascii_uppercase: no `ß` -> `SS`.
  assert.equal(capability('cap_straße'), 'STRAßE');
});

test('splitList trims and drops empty entries, at Rust whitespace', () => {
  assert.deepEqual(splitList(' a, b ,,c,'), ['a', 'b', 'c']);
  assert.deepEqual(splitList(''), []);
  assert.deepEqual(splitList(' , '), []);
  assert.deepEqual(splitList('a b\tc, d'), ['a', 'b', 'c', 'd']);
  // U+0085 is whitespace to Rust but not to JS's \s; U+FEFF the other way round.
  assert.deepEqual(splitList('a\u0085b'), ['a', 'b']);
  assert.deepEqual(splitList('a\ufeffb'), ['a\ufeffb']);
});

test('list distinguishes missing from empty and names the key on error', () => {
  assert.deepEqual(list(settings({ k: '' }), 'k'), []);
  assert.equal(list(settings({ k: '' }), 'other'), undefined);
  assert.throws(() => list(settings({ k: new Error('boom') }), 'k'), {
    message: 'cannot read wasi:config key k: boom',
  });
});

test('namespaces are quoted as Rust {:?} quotes them', () => {
  assert.equal(rustDebugString('default'), '"default"');
  assert.equal(rustDebugString('a"b\\c'), '"a\\"b\\\\c"');
  assert.equal(rustDebugString('a\nb\t\u0000\u001b'), '"a\\nb\\t\\0\\u{1b}"');
});
