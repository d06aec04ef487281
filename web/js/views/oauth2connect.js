// "Connect": the OAuth2 device-code authorization of an account, from the
// accounts page.  POST /accounts/{account}/oauth2/device starts it (or
// answers the one already pending); the panel shows the page to open and
// the code to enter there, then follows GET .../oauth2/device until the
// person approved (the bridge stored the grant and polls the account),
// refused, or the code expired.  No token ever reaches the browser: the
// bridge polls the provider itself.

import * as api from '../api.js';
import { h, fill, badge, toast, withBusy } from '../dom.js';

const FOLLOW_MS = 1500;           // how often GET follows a pending authorization
const FOLLOW_MAX_MS = 31 * 60000; // never longer than the bridge polls (30 min)

const STATE_KIND = { pending: 'info', authorized: 'ok', denied: 'error', expired: 'warn', error: 'error' };

// Whether the account needs an authorization the dashboard can give: a
// device-code account without a usable grant, or whose token was refused.
export function needsAuthorization(a) {
  const o = a && a.oauth2;
  return Boolean(o) && o.flow === 'device_code' &&
    (o.authorization !== 'authorized' || a.state === 'auth_error');
}

// The panel (put it above the accounts table; it survives the table's
// refreshes).  onAuthorized(name) runs once a grant is stored.
export function connectPanel(onAuthorized) {
  const el = h('section.notice', { id: 'oauth2-connect', hidden: true, 'aria-labelledby': 'oauth2-connect-title' });
  let timer = null;
  let alive = true;
  let current = null; // account being connected
  let until = 0;

  function stopFollowing() {
    clearTimeout(timer);
    timer = null;
  }

  function close() {
    stopFollowing();
    current = null;
    el.hidden = true;
  }

  function render(name, d, problem) {
    el.hidden = false;
    const state = d ? d.state : 'error';
    const head = h('h2', { id: 'oauth2-connect-title' }, 'Connect ' + name + ' ',
      badge(state, STATE_KIND[state] || 'neutral'));
    const parts = [head];
    if (d && d.state === 'pending') {
      parts.push(
        h('p', null, 'Open this page, sign in with the mailbox\'s account and enter the code:'),
        h('p', null, h('a.mono', {
          id: 'oauth2-verification-uri', href: d.verification_uri, target: '_blank', rel: 'noopener noreferrer',
        }, d.verification_uri)),
        h('p', null, 'Code: ', h('strong', null, h('code.mono', { id: 'oauth2-user-code' }, d.user_code))),
        h('p.detail', { id: 'oauth2-state', role: 'status' },
          'Waiting for the approval… (the code expires in ' + Math.max(0, Math.round(d.expires_in / 60)) + ' min)'));
    } else if (d && d.state === 'starting') {
      parts.push(h('p', { id: 'oauth2-state', role: 'status' }, 'Asking the provider for a code…'));
    } else if (d && d.state === 'authorized') {
      parts.push(h('p', { id: 'oauth2-state', role: 'status' },
        'Connected: the bridge keeps the account\'s tokens and polls it now.'));
    } else {
      const why = problem ? (problem.detail || problem.title || problem.message)
        : (d && d.error) || 'The authorization did not complete.';
      parts.push(h('p', { id: 'oauth2-state', role: 'alert' }, why));
    }
    const actions = h('div.actions');
    if (!d || !['pending', 'starting', 'authorized'].includes(d.state)) {
      actions.append(h('button.btn.btn-primary', {
        type: 'button', id: 'oauth2-retry', onclick: (ev) => start(ev.currentTarget, name),
      }, 'Try again'));
    }
    actions.append(h('button.btn', { type: 'button', id: 'oauth2-close', onclick: close },
      d && (d.state === 'pending' || d.state === 'starting') ? 'Hide' : 'Close'));
    parts.push(actions);
    fill(el, parts);
  }

  async function follow(name) {
    timer = null;
    if (!alive || current !== name) return;
    let d;
    try {
      d = await api.get('/accounts/' + api.seg(name) + '/oauth2/device');
    } catch (e) {
      if (!alive || current !== name) return;
      if (e.status === 0 && Date.now() < until) { // the bridge did not answer: look again
        timer = setTimeout(() => follow(name), FOLLOW_MS);
        return;
      }
      render(name, null, e);
      return;
    }
    if (!alive || current !== name) return;
    render(name, d);
    if (d.state === 'pending' || d.state === 'starting') {
      if (Date.now() < until) timer = setTimeout(() => follow(name), FOLLOW_MS);
      return;
    }
    if (d.state === 'authorized') {
      toast('Account ' + name + ' is connected.', 'ok');
      if (onAuthorized) onAuthorized(name);
    }
  }

  async function start(btn, name) {
    stopFollowing();
    current = name;
    until = Date.now() + FOLLOW_MAX_MS;
    await withBusy(btn, 'Connecting…', async () => {
      let d;
      try {
        d = await api.post('/accounts/' + api.seg(name) + '/oauth2/device');
      } catch (e) {
        if (alive && current === name) render(name, null, e);
        return;
      }
      if (!alive || current !== name) return;
      render(name, d);
      timer = setTimeout(() => follow(name), FOLLOW_MS);
    });
    const link = el.querySelector('#oauth2-verification-uri');
    if (link) link.focus();
  }

  // A "Connect" button for an account's row.
  function button(a) {
    return h('button.btn.btn-small.btn-primary', {
      type: 'button', dataset: { focusKey: 'connect:' + a.name, action: 'connect' },
      'aria-label': 'Connect ' + a.name + ' (authorize its mailbox)',
      onclick: (ev) => start(ev.currentTarget, a.name),
    }, 'Connect');
  }

  return {
    el,
    button,
    cleanup() {
      alive = false;
      stopFollowing();
    },
  };
}
