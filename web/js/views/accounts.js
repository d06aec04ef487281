// Accounts: state, last success, last error, stored and pending counts;
// "Poll now"; "Connect" for an account that needs an OAuth2 authorization
// (oauth2connect.js); the bridge instances sharing the store and the
// accounts each is polling; refreshes by itself.

import * as api from '../api.js';
import { h, add, fill, clear, table, badge, errorCodeBadge, emptyState, errorBox, loading, timeEl, toast, withBusy } from '../dom.js';
import { connectPanel, needsAuthorization } from './oauth2connect.js';

const REFRESH_MS = 5000;

const STATE_KIND = {
  idle: 'ok', polling: 'info', backoff: 'warn', auth_error: 'error', error: 'error',
};

export function stateBadge(state) {
  const s = state || 'unknown';
  return badge(s.replace(/_/g, ' '), STATE_KIND[s] || 'neutral');
}

export function accountsView(ctx) {
  document.title = 'Accounts · pop3bridge';
  let alive = true;
  let timer = null;
  let inFlight = false;
  const auto = h('input', { type: 'checkbox', id: 'auto-refresh', checked: true });
  const updated = h('span.muted', { id: 'accounts-updated' });
  const body = h('div', { id: 'accounts-body' }, loading('Loading accounts…'));
  const instBody = h('div', { id: 'instances-body' });
  // OAuth2: once an account is connected, show its new state (and its poll)
  const connect = connectPanel(() => {
    for (const ms of [300, 2000, 5000]) setTimeout(() => { if (alive) load(); }, ms);
  });

  add(ctx.main, 
    h('div.page-head', null,
      h('h1', null, 'Accounts'),
      h('div.page-tools', null,
        h('label.inline', { for: 'auto-refresh' }, auto, ' Refresh every ' + REFRESH_MS / 1000 + ' s'),
        h('button.btn', { type: 'button', id: 'refresh', onclick: () => load() }, 'Refresh'),
        updated)),
    connect.el,
    body,
    h('section.instances', { 'aria-labelledby': 'instances-title' },
      h('h2', { id: 'instances-title' }, 'Instances'),
      instBody));

  function renderInstances(res) {
    const list = Array.isArray(res && res.instances) ? res.instances : [];
    clear(instBody);
    if (!list.length) {
      add(instBody, h('p.muted', null, 'No instance has written a heartbeat yet.'));
      return;
    }
    const cols = [
      { label: 'Instance' }, { label: 'Host' }, { label: 'API' }, { label: 'Started' },
      { label: 'Last heartbeat' }, { label: 'Polling now', cls: 'col-wide' },
    ];
    const rows = list.map((i) => ({
      attrs: { dataset: { instance: i.id } },
      cells: [
        i.id, i.host,
        i.public_url ? h('span', null, i.public_url) : h('span.muted', null, '—'),
        timeEl(i.started_at), timeEl(i.heartbeat_at),
        i.accounts && i.accounts.length ? i.accounts.join(', ') : h('span.muted', null, '—'),
      ],
    }));
    add(instBody, table('Instances (store: ' + (res.store || '?') + ')', cols, rows, { cls: 'instances' }));
  }

  async function loadInstances() {
    try {
      const res = await api.get('/instances');
      if (alive) renderInstances(res);
    } catch (e) {
      if (alive) fill(instBody, errorBox(e, 'Could not load the instances'));
    }
  }

  async function pollNow(btn, name) {
    await withBusy(btn, 'Polling…', async () => {
      try {
        await api.post('/accounts/' + api.seg(name) + '/poll');
        toast('Poll of ' + name + ' started.', 'ok');
      } catch (e) {
        if (!alive) return;
        toast('Poll of ' + name + ' failed to start: ' + (e.detail || e.title || e.message), 'error');
        return;
      }
    });
    // the poll runs in the background: look again soon
    for (const ms of [700, 2000, 5000]) setTimeout(() => { if (alive) load(); }, ms);
  }

  function renderAccounts(list) {
    const focusKey = document.activeElement && body.contains(document.activeElement)
      ? document.activeElement.dataset.focusKey : null;
    clear(body);
    if (!list.length) {
      add(body, emptyState('No accounts configured.',
        'Add accounts to the bridge\'s configuration file and reload it (SIGHUP).'));
      return;
    }
    const cols = [
      { label: 'Account' }, { label: 'State' }, { label: 'Last success' }, { label: 'Last attempt' },
      { label: 'Last error', cls: 'col-wide' }, { label: 'Stored', cls: 'num' }, { label: 'Pending', cls: 'num' },
      { label: 'Actions', cls: 'col-actions' },
    ];
    const rows = list.map((a) => ({
      attrs: { dataset: { account: a.name } },
      cells: [
        h('a', { href: '#/accounts/' + api.seg(a.name), dataset: { focusKey: 'open:' + a.name },
          'aria-label': 'Mailbox of ' + a.name }, a.name),
        [stateBadge(a.state), needsAuthorization(a) ? h('div.connect', null, connect.button(a)) : null],
        timeEl(a.last_success_at),
        timeEl(a.last_attempt_at),
        a.last_error || a.last_error_code
          ? [errorCodeBadge(a.last_error_code), ' ', h('span.error-text', null, a.last_error || '')]
          : h('span.muted', null, '—'),
        String(a.stored ?? '—'),
        a.pending_deliveries
          ? h('a', { href: '#/deliveries?account=' + api.seg(a.name) }, String(a.pending_deliveries))
          : String(a.pending_deliveries ?? '—'),
        h('div.row-actions', null,
          h('button.btn.btn-small', {
            type: 'button', dataset: { focusKey: 'poll:' + a.name, action: 'poll' },
            'aria-label': 'Poll ' + a.name + ' now',
            onclick: (ev) => pollNow(ev.currentTarget, a.name),
          }, 'Poll now')),
      ],
    }));
    add(body, table('Accounts', cols, rows, { cls: 'accounts' }));
    if (focusKey) {
      const el = [...body.querySelectorAll('[data-focus-key]')].find((x) => x.dataset.focusKey === focusKey);
      if (el) el.focus();
    }
  }

  async function load() {
    if (inFlight || !alive) return;
    inFlight = true;
    try {
      loadInstances();
      const res = await api.get('/accounts');
      if (!alive) return;
      renderAccounts(Array.isArray(res && res.accounts) ? res.accounts : []);
      fill(updated, 'Updated ', timeEl(Date.now(), { relative: false }));
    } catch (e) {
      if (!alive) return;
      fill(body, errorBox(e, 'Could not load the accounts'));
    } finally {
      inFlight = false;
    }
  }

  function schedule() {
    clearInterval(timer);
    timer = auto.checked ? setInterval(() => {
      if (!document.hidden) load();
    }, REFRESH_MS) : null;
  }
  auto.addEventListener('change', schedule);
  schedule();
  load();

  return {
    cleanup() {
      alive = false;
      clearInterval(timer);
      connect.cleanup();
    },
  };
}
