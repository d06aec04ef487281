// One account's mailbox, live through the API (each call is its own POP3
// session): messages with From, Subject, Date (from the bridge's store, or
// TOP n 0, through ?headers=1), size and stored/delivered; a filter box; a
// preview from TOP; open; delete with a confirmation.

import * as api from '../api.js';
import {
  h, add, fill, clear, table, badge, emptyState, errorBox, loading, fmtSize, fmtAddress, timeEl, toast,
  confirmDialog, withBusy,
} from '../dom.js';

const PREVIEW_LINES = 20;

export function storedCell(m) {
  const out = [];
  if (m.stored) {
    out.push(typeof m.stored === 'string'
      ? h('a', { href: '#/messages/' + api.seg(m.stored) }, badge('stored', 'info'))
      : badge('stored', 'info'));
  }
  if (m.delivered) out.push(badge('delivered', 'ok'));
  if (!out.length) out.push(h('span.muted', null, 'not yet'));
  return h('span.badges', null, out);
}

export function mailboxView(ctx, account) {
  document.title = account + ' · Mailbox · pop3bridge';
  let alive = true;
  const base = '/accounts/' + api.seg(account);
  const stat = h('p.muted', { id: 'mailbox-stat' });
  const filterInput = h('input', { id: 'mailbox-filter', type: 'search', autocomplete: 'off', spellcheck: 'false',
    placeholder: 'From, subject or UIDL', oninput: () => applyFilter() });
  const filterCount = h('span.muted', { id: 'mailbox-filter-count', 'aria-live': 'polite' });
  const filterBox = h('div.filters', { role: 'search' },
    h('label', { for: 'mailbox-filter' }, 'Filter '), filterInput, ' ', filterCount);
  const body = h('div', { id: 'mailbox-body' }, loading('Asking the mail server…'));
  const preview = h('section.preview', { id: 'preview', 'aria-live': 'polite', 'aria-label': 'Preview', hidden: true });

  add(ctx.main, 
    h('nav.crumbs', { 'aria-label': 'Breadcrumb' }, h('a', { href: '#/accounts' }, 'Accounts'), ' / ', account),
    h('div.page-head', null,
      h('h1', null, 'Mailbox: ', h('span', { id: 'mailbox-account' }, account)),
      h('div.page-tools', null,
        h('a.btn', { href: '#/accounts/' + api.seg(account) + '/details', id: 'mailbox-account-link' }, 'Account details'),
        h('button.btn', { type: 'button', id: 'mailbox-refresh', onclick: (ev) => withBusy(ev.currentTarget, 'Refreshing…', load) }, 'Refresh'))),
    stat,
    filterBox,
    h('div.split', null, body, preview));

  async function showPreview(m, btn) {
    preview.hidden = false;
    fill(preview, loading('Loading the preview (TOP)…'));
    try {
      const t = await withBusy(btn, null, () => api.get(base + '/messages/' + api.seg(m.uidl) + '/top', { lines: PREVIEW_LINES }));
      if (!alive) return;
      fill(preview, 
        h('div.preview-head', null,
          h('h2', { id: 'preview-title' }, 'Preview of message ' + m.number),
          h('button.btn.btn-small.btn-quiet', { type: 'button', 'aria-label': 'Close the preview',
            onclick: () => { preview.hidden = true; btn.focus(); } }, 'Close')),
        h('dl.fields', null,
          h('dt', null, 'Subject'), h('dd', { id: 'preview-subject' }, t.subject ?? h('span.muted', null, '(no subject)')),
          h('dt', null, 'From'), h('dd', null, fmtAddress(t.from) || h('span.muted', null, '—')),
          h('dt', null, 'Date'), h('dd', null, t.date ? timeEl(t.date) : h('span.muted', null, '—')),
          h('dt', null, 'UIDL'), h('dd.mono', null, t.uidl ?? m.uidl)),
        h('h3', null, 'First ' + PREVIEW_LINES + ' lines of the body'),
        t.body ? h('pre.body', { id: 'preview-body' }, t.body) : emptyState('The body is empty.'),
        h('div.actions', null,
          h('a.btn.btn-primary', { href: '#/accounts/' + api.seg(account) + '/messages/' + api.seg(m.uidl) }, 'Open the full message')));
      preview.querySelector('h2').setAttribute('tabindex', '-1');
      preview.querySelector('h2').focus();
    } catch (e) {
      if (!alive) return;
      fill(preview, errorBox(e, 'Could not load the preview'));
    }
  }

  async function deleteMessage(m, btn) {
    const ok = await confirmDialog('Delete message ' + m.number + '?',
      'This deletes the message with UIDL ' + m.uidl + ' from the mail server (DELE, then QUIT). It cannot be undone.',
      'Delete');
    if (!ok || !alive) return;
    try {
      await withBusy(btn, 'Deleting…', () => api.del(base + '/messages/' + api.seg(m.uidl)));
      if (!alive) return;
      toast('Message ' + m.uidl + ' deleted.', 'ok');
      preview.hidden = true;
      await load();
      const h1 = ctx.main.querySelector('h1');
      if (h1) h1.focus();
    } catch (e) {
      if (!alive) return;
      toast('Could not delete: ' + (e.detail || e.title || e.message), 'error');
    }
  }

  // The text a row is found by: sender, subject and UIDL.
  function searchText(m) {
    return [fmtAddress(m.from), m.subject || '', m.uidl || ''].join('\n').toLowerCase();
  }

  function applyFilter() {
    const q = filterInput.value.trim().toLowerCase();
    const rows = body.querySelectorAll('table.messages tbody tr');
    let shown = 0;
    for (const tr of rows) {
      const hit = !q || (tr.dataset.search || '').includes(q);
      tr.hidden = !hit;
      if (hit) shown++;
    }
    filterCount.textContent = q ? shown + ' of ' + rows.length + ' shown' : '';
  }

  function renderList(list) {
    clear(body);
    if (!list.length) {
      add(body, emptyState('The mailbox is empty.', 'No messages are waiting on the mail server.'));
      return;
    }
    const cols = [
      { label: '#', cls: 'num' }, { label: 'From', cls: 'col-from' }, { label: 'Subject', cls: 'col-subject' },
      { label: 'Date', cls: 'col-date' }, { label: 'Size', cls: 'num' },
      { label: 'Bridge' }, { label: 'Actions', cls: 'col-actions' },
    ];
    const rows = list.map((m) => ({
      attrs: { dataset: { uidl: m.uidl, number: String(m.number), search: searchText(m) } },
      cells: [
        String(m.number),
        h('span.from', { title: m.from && m.from.address ? m.from.address : '' },
          m.from ? (m.from.name || m.from.address) : h('span.muted', null, '—')),
        h('span.subject-cell', null,
          h('span.subject', null, m.subject ?? h('span.muted', null, '(no subject)')),
          h('span.uidl.muted', { title: 'UIDL' }, m.uidl)),
        m.date ? timeEl(m.date, { relative: false }) : h('span.muted', null, '—'),
        h('span', { title: m.size + ' octets' }, fmtSize(m.size)),
        storedCell(m),
        h('div.row-actions', null,
          h('button.btn.btn-small', { type: 'button', dataset: { action: 'preview' },
            'aria-label': 'Preview message ' + m.number, onclick: (ev) => showPreview(m, ev.currentTarget) }, 'Preview'),
          h('a.btn.btn-small', { href: '#/accounts/' + api.seg(account) + '/messages/' + api.seg(m.uidl),
            dataset: { action: 'open' }, 'aria-label': 'Open message ' + m.number }, 'Open'),
          h('button.btn.btn-small.btn-danger', { type: 'button', dataset: { action: 'delete' },
            'aria-label': 'Delete message ' + m.number, onclick: (ev) => deleteMessage(m, ev.currentTarget) }, 'Delete')),
      ],
    }));
    add(body, table('Messages on the server', cols, rows, { cls: 'messages' }));
    applyFilter();
  }

  async function load() {
    try {
      const res = await api.get(base + '/messages', { headers: 1 });
      if (!alive) return;
      const list = Array.isArray(res && res.messages) ? res.messages : [];
      renderList(list);
      const octets = list.reduce((s, m) => s + (Number(m.size) || 0), 0);
      stat.textContent = list.length + (list.length === 1 ? ' message, ' : ' messages, ') + fmtSize(octets) + ' on the server.';
    } catch (e) {
      if (!alive) return;
      stat.textContent = '';
      fill(body, errorBox(e, 'Could not list the mailbox'));
      return;
    }
    // STAT + CAPA after the listing (one POP3 session at a time per mailbox)
    try {
      const mb = await api.get(base + '/mailbox');
      if (!alive || !mb) return;
      const caps = Array.isArray(mb.capabilities) ? mb.capabilities : [];
      stat.textContent = 'STAT: ' + mb.count + (mb.count === 1 ? ' message, ' : ' messages, ') + fmtSize(mb.octets) +
        (caps.length ? '. Server capabilities: ' + caps.join(', ') : '') + '.';
    } catch (_) {
      /* the listing is shown; STAT is extra */
    }
  }

  load();
  return { cleanup() { alive = false; } };
}
