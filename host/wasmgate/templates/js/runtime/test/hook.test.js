// Unit tests of src/hook.js, natively under Node: `./build --test`.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  ALLOW,
  NAME,
  annotate,
  decide,
  postSubscriptions,
  pre,
  subscriptions,
} from '../src/hook.js';

test('subscribes to new containers, and allows them without the key', () => {
  assert.deepEqual(subscriptions(), ['create-container']);
  assert.deepEqual(postSubscriptions(), []);
  assert.deepEqual(decide(undefined), ALLOW);
});

test('annotates with the key', () => {
  assert.deepEqual(decide('example.com/team = a=b'), {
    tag: 'adjust',
    val: annotate('example.com/team', 'a=b'),
  });
});

test('denies a malformed key, naming it', () => {
  for (const bad of ['no-equals', '=value']) {
    const decision = decide(bad);
    assert.equal(decision.tag, 'deny', bad);
    assert.ok(decision.val.startsWith(NAME) && decision.val.includes('annotation'), decision.val);
  }
  const gone = pre({ tag: 'create-container', val: [{}, {}] }, {
    get() {
      throw new Error('gone');
    },
  });
  assert.equal(gone.tag, 'deny');
});
