// The dashboard: sign-in, navigation and the hash router.  Routes (no token
// or message content in them, only names and ids):
//   #/accounts                          accounts
//   #/accounts/{account}                that account's mailbox (live POP3)
//   #/accounts/{account}/details        that account: CAPA, TLS, poll history
//   #/accounts/{account}/messages/{uidl} one message, from the mailbox
//   #/messages/{id}                     one stored message
//   #/deliveries?status=&account=       deliveries
//   #/deliveries/{id}                   one delivery and its attempts
//   #/webhooks                          webhooks: statistics, traffic chart
//   #/api                               the API reference (openapi.yaml)

import * as api from './api.js';
import { h, add, clear, errorBox, timeZoneName } from './dom.js';
import { accountsView } from './views/accounts.js';
import { mailboxView } from './views/mailbox.js';
import { messageView } from './views/message.js';
import { deliveriesView, deliveryView } from './views/deliveries.js';
import { apiDocView } from './views/apidoc.js';
import { accountView } from './views/account.js';
import { webhooksView } from './views/webhooks.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const signOutBtn = document.getElementById('sign-out');

let current = null; // {cleanup} of the view on screen
let signInNotice = '';

function parseHash() {
  const raw = location.hash.startsWith('#/') ? location.hash.slice(2) : '';
  const [pathPart, queryPart] = raw.split('?');
  const parts = pathPart.split('/').filter((p) => p !== '').map((p) => {
    try {
      return decodeURIComponent(p);
    } catch (_) {
      return null;
    }
  });
  return { parts, query: new URLSearchParams(queryPart || '') };
}

function route() {
  const { parts, query } = parseHash();
  if (parts.includes(null)) return { name: 'notfound' };
  const [a, b, c, d] = parts;
  if (parts.length === 0 || (a === 'accounts' && parts.length === 1)) return { name: 'accounts' };
  if (a === 'accounts' && parts.length === 2) return { name: 'mailbox', account: b };
  if (a === 'accounts' && parts.length === 3 && c === 'details') return { name: 'account', account: b };
  if (a === 'webhooks' && parts.length === 1) return { name: 'webhooks' };
  if (a === 'accounts' && parts.length === 4 && c === 'messages') return { name: 'message', account: b, uidl: d };
  if (a === 'messages' && parts.length === 2) return { name: 'stored', id: b };
  if (a === 'deliveries' && parts.length === 1) {
    return { name: 'deliveries', status: query.get('status') || '', account: query.get('account') || '' };
  }
  if (a === 'deliveries' && parts.length === 2) return { name: 'delivery', id: b };
  if (a === 'api' && parts.length === 1) return { name: 'api' };
  return { name: 'notfound' };
}

function setNav(name) {
  const section = { accounts: 'accounts', mailbox: 'accounts', message: 'accounts', account: 'accounts', webhooks: 'webhooks', stored: 'deliveries',
    deliveries: 'deliveries', delivery: 'deliveries', api: 'api' }[name];
  for (const link of nav.querySelectorAll('a[data-nav]')) {
    if (link.dataset.nav === section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

function stopView() {
  if (current && current.cleanup) {
    try {
      current.cleanup();
    } catch (_) {
      /* a view's cleanup must not stop navigation */
    }
  }
  current = null;
}

function render() {
  stopView();
  if (!api.getToken()) {
    showSignIn();
    return;
  }
  nav.hidden = false;
  signOutBtn.hidden = false;
  const r = route();
  setNav(r.name);
  clear(main);
  const ctx = { main, route: r, go: (hash) => { location.hash = hash; } };
  try {
    switch (r.name) {
      case 'accounts': current = accountsView(ctx); break;
      case 'mailbox': current = mailboxView(ctx, r.account); break;
      case 'account': current = accountView(ctx, r.account); break;
      case 'webhooks': current = webhooksView(ctx); break;
      case 'message': current = messageView(ctx, { account: r.account, uidl: r.uidl }); break;
      case 'stored': current = messageView(ctx, { id: r.id }); break;
      case 'deliveries': current = deliveriesView(ctx, { status: r.status, account: r.account }); break;
      case 'delivery': current = deliveryView(ctx, r.id); break;
      case 'api': current = apiDocView(ctx); break;
      default:
        document.title = 'Not found · pop3bridge';
        add(main, h('h1', null, 'Not found'),
          h('p', null, 'There is no page here. ', h('a', { href: '#/accounts' }, 'Go to the accounts.')));
    }
  } catch (e) {
    add(main, errorBox(e, 'This page failed'));
  }
  if (document.activeElement === document.body || !main.contains(document.activeElement)) {
    const heading = main.querySelector('h1');
    if (heading && !heading.hasAttribute('tabindex')) heading.setAttribute('tabindex', '-1');
    if (heading && wasNavigation) heading.focus({ preventScroll: true });
  }
  wasNavigation = false;
}

let wasNavigation = false;

function showSignIn() {
  nav.hidden = true;
  signOutBtn.hidden = true;
  clear(main);
  document.title = 'Sign in · pop3bridge';
  const input = h('input', {
    id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false',
    required: true, 'aria-describedby': 'token-help',
  });
  const msg = h('div', { id: 'sign-in-msg', 'aria-live': 'assertive' });
  const btn = h('button.btn.btn-primary', { type: 'submit', id: 'sign-in-btn' }, 'Sign in');
  if (signInNotice) {
    add(msg, h('p.notice.notice-warn', null, signInNotice));
    signInNotice = '';
  }
  const form = h('form.card.sign-in', { id: 'sign-in', novalidate: true },
    h('h1', null, 'Sign in'),
    h('p', null, 'Paste an API token from the bridge\'s configuration (api.tokens).'),
    h('label', { for: 'token' }, 'API token'),
    input,
    h('p.help', { id: 'token-help' }, 'Kept only in this browser tab (sessionStorage) until you sign out or close it.'),
    msg,
    h('div.actions', null, btn));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear(msg);
    const token = input.value.trim();
    if (!token) {
      add(msg, h('p.notice.notice-error', { role: 'alert' }, 'Enter a token.'));
      input.focus();
      return;
    }
    btn.disabled = true;
    btn.textContent = 'Checking…';
    try {
      await api.checkToken(token);
      api.setToken(token);
      input.value = '';
      wasNavigation = true;
      if (!location.hash.startsWith('#/')) location.hash = '#/accounts';
      else render();
    } catch (e) {
      if (e.status === 401 || e.status === 403) {
        add(msg, h('p.notice.notice-error', { role: 'alert', id: 'sign-in-error' },
          'This token was not accepted by the bridge. Check it and try again.'));
      } else {
        add(msg, errorBox(e, 'Could not sign in'));
      }
      input.select();
      input.focus();
    } finally {
      if (btn.isConnected) {
        btn.disabled = false;
        btn.textContent = 'Sign in';
      }
    }
  });
  add(main, form);
  input.focus();
}

function signOut(notice) {
  api.clearToken();
  signInNotice = notice || '';
  render();
}

api.setUnauthorizedHandler(() => {
  signOut('The bridge no longer accepts your token. Sign in again.');
});

signOutBtn.addEventListener('click', () => signOut('Signed out.'));

document.getElementById('skip-link').addEventListener('click', (ev) => {
  ev.preventDefault();
  main.focus();
});

window.addEventListener('hashchange', () => {
  wasNavigation = true;
  render();
});

const tz = timeZoneName();
if (tz) document.getElementById('tz').textContent = 'Times in ' + tz;

render();
