// One account: its state, the server's capabilities (CAPA), the TLS version
// and certificate of the last session, and the recent polls
// (GET /api/v1/accounts/{account}: last_session, polls).

import * as api from '../api.js';
import { h, add, fill, table, badge, errorCodeBadge, emptyState, errorBox, loading, fmtMs, timeEl, withBusy } from '../dom.js';

const STATE_KIND = { idle: 'ok', polling: 'info', backoff: 'warn', auth_error: 'error', error: 'error' };

function field(label, value, id) {
  return [h('dt', null, label), h('dd', id ? { id } : null, value)];
}

export function accountView(ctx, account) {
  document.title = account + ' · Account · pop3bridge';
  let alive = true;
  const body = h('div', { id: 'account-body' }, loading('Reading the account…'));
  add(ctx.main,
    h('nav.crumbs', { 'aria-label': 'Breadcrumb' }, h('a', { href: '#/accounts' }, 'Accounts'), ' / ', account),
    h('div.page-head', null,
      h('h1', null, 'Account: ', h('span', { id: 'account-name' }, account)),
      h('div.page-tools', null,
        h('a.btn', { href: '#/accounts/' + api.seg(account) }, 'Mailbox'),
        h('button.btn', { type: 'button', id: 'account-refresh', onclick: (ev) => withBusy(ev.currentTarget, 'Refreshing…', load) }, 'Refresh'))),
    body);

  function render(a) {
    const ls = a.last_session;
    const tls = ls && ls.tls;
    const polls = Array.isArray(a.polls) ? a.polls : [];
    const state = h('dl.fields', { id: 'account-state' },
      field('State', badge(a.state, STATE_KIND[a.state] || 'neutral'), 'account-state-value'),
      field('Last attempt', timeEl(a.last_attempt_at)),
      field('Last success', timeEl(a.last_success_at)),
      field('Last error', a.last_error || a.last_error_code
        ? h('span', null, errorCodeBadge(a.last_error_code), ' ', a.last_error || '')
        : h('span.muted', null, 'none'), 'account-last-error'),
      field('Stored messages', String(a.stored)),
      field('Pending deliveries', String(a.pending_deliveries)));
    const session = !ls ? emptyState('No session yet.', 'The server\'s capabilities and certificate show after the first poll.')
      : h('div', null,
        h('p.muted', null, 'Logged in ', timeEl(ls.at), '.'),
        h('h3', null, 'Capabilities (CAPA)'),
        ls.capabilities.length
          ? h('ul.capa', { id: 'account-capa' }, ls.capabilities.map((c) => h('li.mono', null, c)))
          : h('p.muted', { id: 'account-capa' }, 'The server did not answer CAPA.'),
        h('h3', null, 'TLS'),
        tls ? h('dl.fields', { id: 'account-tls' },
          field('Version', tls.version, 'tls-version'),
          field('Cipher', h('span.mono', null, tls.cipher)),
          field('Verified', tls.verified ? badge('yes (' + tls.verify + ')', 'ok') : badge('no', 'error')),
          field('Subject', h('span.mono', null, tls.subject), 'tls-subject'),
          field('Issuer', h('span.mono', null, tls.issuer), 'tls-issuer'),
          field('Expires', timeEl(tls.not_after, { never: 'unknown' }), 'tls-expires'),
          field('Fingerprint', h('span.mono', null, tls.fingerprint)))
          : h('p', { id: 'account-tls' }, badge('no TLS', 'warn'), ' The last session was not encrypted.'));
    // several instances on one store: each poll names the instance that made it
    // (Poll.instance); one instance names none, and the column is left out
    const byInstance = polls.some((p) => p.instance);
    const history = polls.length
      ? table('Recent polls, newest first', [
        { label: 'When' }, { label: 'Duration', cls: 'num' }, { label: 'Listed', cls: 'num' },
        { label: 'New', cls: 'num' }, { label: 'Deleted', cls: 'num' }, { label: 'Outcome' },
        ...(byInstance ? [{ label: 'Instance', cls: 'poll-instance' }] : []),
      ], polls.map((p) => ({
        attrs: { dataset: { outcome: p.outcome } },
        cells: [timeEl(p.at), fmtMs(p.duration_ms), String(p.listed), String(p.new_messages), String(p.deleted),
          p.outcome === 'ok' ? badge('ok', 'ok') : h('span', null, badge('failed', 'error'), ' ', p.error || ''),
          ...(byInstance ? [p.instance ? h('span.mono', null, p.instance) : h('span.muted', null, 'unknown')] : [])],
      })), { cls: 'polls' })
      : emptyState('No polls yet.', 'Polls since the bridge started are listed here.');
    fill(body,
      h('section', null, h('h2', null, 'State'), state),
      h('section', null, h('h2', null, 'Last session'), session),
      h('section', null, h('h2', null, 'Poll history'), history));
  }

  async function load() {
    try {
      const a = await api.get('/accounts/' + api.seg(account));
      if (alive) render(a);
    } catch (e) {
      if (alive) fill(body, errorBox(e, 'Could not read the account'));
    }
  }

  load();
  return { cleanup() { alive = false; } };
}
