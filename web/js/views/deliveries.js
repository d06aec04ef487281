// Deliveries: filter by status and account, page through them, see one
// delivery's attempts (HTTP status, error, timing), retry failed and dead ones
// (one, or all of a status at once), drop one (kept, as "dropped"); the last
// two behind a confirmation.

import * as api from '../api.js';
import {
  h, add, fill, clear, table, badge, emptyState, errorBox, loading, fmtMs, timeEl, toast, withBusy,
  confirmDialog,
} from '../dom.js';

const STATUSES = ['pending', 'failed', 'dead', 'delivered', 'dropped'];
const STATUS_KIND = { pending: 'info', failed: 'warn', dead: 'error', delivered: 'ok', dropped: 'neutral' };
const BULK_MAX = 1000; // deliveries one bulk retry takes (the API's STORE_RETRY_BULK_MAX)
const PAGE = 50;
const REFRESH_MS = 10000;

export function statusBadge(s) {
  return badge(s || 'unknown', STATUS_KIND[s] || 'neutral');
}

export function canRetry(d) {
  return d.status === 'failed' || d.status === 'dead';
}

// Attempts of a delivery: the list (detail view) and the count.
function attemptList(d) {
  if (Array.isArray(d.attempts)) return d.attempts;
  if (Array.isArray(d.attempt_list)) return d.attempt_list;
  return null;
}

function attemptCount(d) {
  if (typeof d.attempts === 'number') return d.attempts;
  if (typeof d.attempt_count === 'number') return d.attempt_count;
  const l = attemptList(d);
  return l ? l.length : null;
}

function httpCell(code) {
  if (!code) return h('span.muted', null, 'no answer');
  const kind = code >= 200 && code < 300 ? 'ok' : code >= 500 || code === 429 ? 'warn' : 'error';
  return badge(String(code), kind);
}

async function retry(d, btn, after) {
  await withBusy(btn, 'Retrying…', async () => {
    try {
      await api.post('/deliveries/' + api.seg(d.id) + '/retry');
      toast('Delivery ' + d.id + ' queued again.', 'ok');
    } catch (e) {
      toast('Could not retry ' + d.id + ': ' + (e.detail || e.title || e.message), 'error');
    }
  });
  after();
}

function problemText(e) {
  return e.detail || e.title || e.message;
}

// Drop one failed or dead delivery, after a confirmation.
async function drop(d, btn, after) {
  const ok = await confirmDialog('Drop delivery ' + d.id + '?',
    'It will not be tried again. It stays listed, as "dropped", with its attempts; ' +
    'if it was the message\'s last delivery, the message counts as delivered.', 'Drop');
  if (!ok) return;
  await withBusy(btn, 'Dropping…', async () => {
    try {
      await api.del('/deliveries/' + api.seg(d.id));
      toast('Delivery ' + d.id + ' dropped.', 'ok');
    } catch (e) {
      toast('Could not drop ' + d.id + ': ' + problemText(e), 'error');
    }
  });
  after();
}

// Retry every delivery of a status (failed or dead), after a confirmation.
async function retryAll(status, btn, after) {
  const ok = await confirmDialog('Retry all ' + status + ' deliveries?',
    'Every ' + status + ' delivery (up to ' + BULK_MAX + ' at a time) is tried again now.',
    'Retry all');
  if (!ok) return;
  await withBusy(btn, 'Retrying…', async () => {
    try {
      const res = await api.post('/deliveries/retry', { status });
      const n = res && typeof res.retried === 'number' ? res.retried : 0;
      toast(n ? n + ' ' + status + ' deliver' + (n === 1 ? 'y' : 'ies') + ' queued again' +
        (res.more ? '; there are more: retry again.' : '.') : 'No ' + status + ' deliveries to retry.', 'ok');
    } catch (e) {
      toast('Could not retry the ' + status + ' deliveries: ' + problemText(e), 'error');
    }
  });
  after();
}

export function deliveriesView(ctx, filter) {
  document.title = 'Deliveries · pop3bridge';
  let alive = true;
  let timer = null;
  let cursor = '';
  let rows = [];
  let inFlight = false;

  const statusSel = h('select', { id: 'filter-status', name: 'status' },
    h('option', { value: '' }, 'Any status'),
    STATUSES.map((s) => h('option', { value: s, selected: s === filter.status }, s)));
  const accountSel = h('select', { id: 'filter-account', name: 'account' },
    h('option', { value: '' }, 'Any account'),
    filter.account ? h('option', { value: filter.account, selected: true }, filter.account) : null);
  const form = h('form.filters', { id: 'deliveries-filter', 'aria-label': 'Filter deliveries' },
    h('div.field', null, h('label', { for: 'filter-status' }, 'Status'), statusSel),
    h('div.field', null, h('label', { for: 'filter-account' }, 'Account'), accountSel),
    h('button.btn', { type: 'button', id: 'deliveries-refresh', onclick: () => load(true) }, 'Refresh'));
  // "Retry all" for the status shown, when it can be retried
  const bulk = h('div.actions', { id: 'deliveries-bulk' });
  function renderBulk() {
    clear(bulk);
    if (filter.status === 'failed' || filter.status === 'dead') {
      add(bulk, h('button.btn', {
        type: 'button', id: 'deliveries-retry-all',
        onclick: (ev) => retryAll(filter.status, ev.currentTarget, () => load(true)),
      }, 'Retry all ' + filter.status));
    }
  }
  const onFilter = () => {
    const q = new URLSearchParams();
    if (statusSel.value) q.set('status', statusSel.value);
    if (accountSel.value) q.set('account', accountSel.value);
    const qs = q.toString();
    history.replaceState(null, '', '#/deliveries' + (qs ? '?' + qs : ''));
    filter = { status: statusSel.value, account: accountSel.value };
    renderBulk();
    load(true);
  };
  statusSel.addEventListener('change', onFilter);
  accountSel.addEventListener('change', onFilter);
  form.addEventListener('submit', (ev) => { ev.preventDefault(); onFilter(); });

  const body = h('div', { id: 'deliveries-body' }, loading('Loading deliveries…'));
  const more = h('div.actions');
  add(ctx.main, h('div.page-head', null, h('h1', null, 'Deliveries')), form, bulk, body, more);
  renderBulk();

  // the account choices come from the configured accounts
  api.get('/accounts').then((res) => {
    if (!alive || !res || !Array.isArray(res.accounts)) return;
    for (const a of res.accounts) {
      if (a.name === filter.account) continue;
      accountSel.appendChild(h('option', { value: a.name }, a.name));
    }
  }).catch(() => { /* the filter still works for a typed-in account */ });

  function render() {
    const focusKey = document.activeElement && body.contains(document.activeElement)
      ? document.activeElement.dataset.focusKey : null;
    clear(body);
    if (!rows.length) {
      const what = [filter.status, filter.account && 'for ' + filter.account].filter(Boolean).join(' ');
      add(body, emptyState(what ? 'No ' + what + ' deliveries.' : 'No deliveries yet.',
        'Messages are delivered to webhooks as they arrive.'));
    } else {
      const cols = [
        { label: 'Delivery', cls: 'mono' }, { label: 'Status' }, { label: 'Account' }, { label: 'Webhook' },
        { label: 'Attempts', cls: 'num' }, { label: 'Last HTTP' }, { label: 'Last error', cls: 'col-wide' },
        { label: 'Updated' }, { label: 'Actions', cls: 'col-actions' },
      ];
      add(body, table('Deliveries', cols, rows.map((d) => ({
        attrs: { dataset: { delivery: d.id, status: d.status } },
        cells: [
          h('a', { href: '#/deliveries/' + api.seg(d.id), dataset: { focusKey: 'open:' + d.id } }, d.id),
          statusBadge(d.status),
          d.account,
          d.webhook,
          String(attemptCount(d) ?? '—'),
          httpCell(d.last_http_status),
          d.last_error ? h('span.error-text', null, d.last_error) : h('span.muted', null, '—'),
          timeEl(d.updated_at || d.created_at),
          h('div.row-actions', null,
            canRetry(d) ? h('button.btn.btn-small', {
              type: 'button', dataset: { action: 'retry', focusKey: 'retry:' + d.id },
              'aria-label': 'Retry delivery ' + d.id, onclick: (ev) => retry(d, ev.currentTarget, () => load(true)),
            }, 'Retry') : null,
            canRetry(d) ? h('button.btn.btn-small', {
              type: 'button', dataset: { action: 'drop', focusKey: 'drop:' + d.id },
              'aria-label': 'Drop delivery ' + d.id, onclick: (ev) => drop(d, ev.currentTarget, () => load(true)),
            }, 'Drop') : null,
            h('a.btn.btn-small', { href: '#/deliveries/' + api.seg(d.id), 'aria-label': 'Details of delivery ' + d.id }, 'Details')),
        ],
      })), { cls: 'deliveries' }));
    }
    clear(more);
    if (cursor) {
      add(more, h('button.btn', { type: 'button', id: 'deliveries-more', onclick: (ev) => withBusy(ev.currentTarget, 'Loading…', () => load(false)) }, 'Show older deliveries'));
    }
    if (focusKey) {
      const el = [...body.querySelectorAll('[data-focus-key]')].find((x) => x.dataset.focusKey === focusKey);
      if (el) el.focus();
    }
  }

  // fresh: the first page again (keeping as many rows as were shown)
  async function load(fresh) {
    if (inFlight || !alive) return;
    inFlight = true;
    try {
      const limit = fresh ? Math.max(PAGE, Math.min(1000, rows.length)) : PAGE;
      const res = await api.get('/deliveries', {
        status: filter.status, account: filter.account, limit, cursor: fresh ? '' : cursor,
      });
      if (!alive) return;
      const list = Array.isArray(res && res.deliveries) ? res.deliveries : [];
      rows = fresh ? list : rows.concat(list);
      cursor = (res && res.next_cursor) || '';
      render();
    } catch (e) {
      if (!alive) return;
      fill(body, errorBox(e, 'Could not load the deliveries'));
      clear(more);
    } finally {
      inFlight = false;
    }
  }

  timer = setInterval(() => { if (!document.hidden) load(true); }, REFRESH_MS);
  load(true);
  return { cleanup() { alive = false; clearInterval(timer); } };
}

export function deliveryView(ctx, id) {
  document.title = 'Delivery ' + id + ' · pop3bridge';
  let alive = true;
  let timer = null;
  const body = h('div', { id: 'delivery-body' }, loading('Loading the delivery…'));
  add(ctx.main, 
    h('nav.crumbs', { 'aria-label': 'Breadcrumb' }, h('a', { href: '#/deliveries' }, 'Deliveries'), ' / ', id),
    h('div.page-head', null, h('h1', null, 'Delivery ', h('span.mono', null, id))),
    body);

  function render(d) {
    const attempts = attemptList(d) || [];
    const msgId = d.message_id || d.message;
    fill(body, 
      h('dl.fields', { id: 'delivery-fields' },
        h('dt', null, 'Status'), h('dd', { id: 'delivery-status' }, statusBadge(d.status)),
        h('dt', null, 'Account'), h('dd', null, h('a', { href: '#/accounts/' + api.seg(d.account) }, d.account)),
        h('dt', null, 'Webhook'), h('dd', null, d.webhook),
        d.event_type ? [h('dt', null, 'Event'), h('dd.mono', null, d.event_type)] : null,
        h('dt', null, 'Message'), h('dd', null, typeof msgId === 'string'
          ? h('a.mono', { href: '#/messages/' + api.seg(msgId) }, msgId) : h('span.muted', null, '—'),
          d.uidl ? h('span.muted', null, ' (UIDL ', h('span.mono', null, d.uidl), ')') : null),
        h('dt', null, 'Created'), h('dd', null, timeEl(d.created_at)),
        d.delivered_at ? [h('dt', null, 'Delivered'), h('dd', null, timeEl(d.delivered_at))] : null,
        (d.status === 'pending' || d.status === 'failed') && d.next_attempt_at
          ? [h('dt', null, 'Next attempt'), h('dd', null, timeEl(d.next_attempt_at))] : null,
        d.last_error && d.status !== 'delivered' ? [h('dt', null, 'Last error'), h('dd.error-text', null, d.last_error)] : null),
      canRetry(d) ? h('div.actions', null, h('button.btn.btn-primary', {
        type: 'button', id: 'delivery-retry',
        onclick: (ev) => retry(d, ev.currentTarget, () => { load(); setTimeout(load, 1500); }),
      }, 'Retry now'), h('button.btn', {
        type: 'button', id: 'delivery-drop', onclick: (ev) => drop(d, ev.currentTarget, load),
      }, 'Drop')) : null,
      h('h2', null, 'Attempts (' + attempts.length + ')'),
      attempts.length
        ? table('Attempts', [{ label: '#', cls: 'num' }, { label: 'Started' }, { label: 'Took', cls: 'num' },
          { label: 'HTTP' }, { label: 'Outcome' }, { label: 'Error', cls: 'col-wide' }],
        attempts.map((a, i) => ({
          cells: [String(i + 1), timeEl(a.started_at), fmtMs(a.duration_ms), httpCell(a.http_status),
            a.outcome || '—', a.error ? h('span.error-text', null, a.error) : h('span.muted', null, '—')],
        })), { cls: 'attempts' })
        : emptyState('No attempts yet.', 'The delivery is waiting for its first try.'));
  }

  async function load() {
    try {
      const d = await api.get('/deliveries/' + api.seg(id));
      if (alive) render(d || {});
    } catch (e) {
      if (alive) fill(body, errorBox(e, 'Could not load the delivery'));
    }
  }
  timer = setInterval(() => { if (!document.hidden) load(); }, REFRESH_MS);
  load();
  return { cleanup() { alive = false; clearInterval(timer); } };
}
