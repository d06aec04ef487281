// One message: from the live mailbox ({account, uidl}) or from the bridge's
// store ({id}).  Text as text; HTML only inside a sandboxed iframe (no
// scripts, no same origin, a CSP that loads nothing remote); headers,
// attachments and the source as text.

import * as api from '../api.js';
import {
  h, add, fill, table, emptyState, errorBox, loading, fmtSize, fmtAddress, fmtAddresses, timeEl, toast,
  confirmDialog, withBusy,
} from '../dom.js';

const SOURCE_SHOW_MAX = 2 * 1024 * 1024; // characters of the source put on the page

// The policy inside the frame: nothing from the network, no scripts, no
// forms; inline styles and data: images of the message itself are allowed.
const FRAME_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; " +
  "script-src 'none'; form-action 'none'; base-uri 'none'";

export function htmlFrameDoc(html) {
  return '<!doctype html><html><head><meta charset="utf-8">' +
    '<meta http-equiv="Content-Security-Policy" content="' + FRAME_CSP + '">' +
    '<meta name="referrer" content="no-referrer">' +
    '</head><body>' + html + '</body></html>';
}

export function htmlFrame(html, title) {
  const f = document.createElement('iframe');
  f.setAttribute('sandbox', ''); // no allow-scripts, no allow-same-origin, no popups, no forms
  f.setAttribute('referrerpolicy', 'no-referrer');
  f.setAttribute('title', title || 'HTML part of the message');
  f.setAttribute('loading', 'lazy');
  f.className = 'html-frame';
  f.srcdoc = htmlFrameDoc(html);
  return f;
}

function b64ToBytes(b64) {
  const bin = atob(b64.replace(/\s+/g, ''));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: filename || 'attachment', hidden: true });
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// Accessible tabs: a tablist of buttons, arrow keys move between them.
function tabs(id, panes) {
  const list = h('div.tabs', { role: 'tablist', 'aria-label': 'Message parts' });
  const panels = [];
  const buttons = panes.map((p, i) => {
    const b = h('button.tab', {
      type: 'button', role: 'tab', id: id + '-tab-' + p.key, 'aria-controls': id + '-panel-' + p.key,
      'aria-selected': i === 0 ? 'true' : 'false', tabindex: i === 0 ? '0' : '-1', dataset: { tab: p.key },
    }, p.label);
    panels.push(h('div.tab-panel', {
      role: 'tabpanel', id: id + '-panel-' + p.key, 'aria-labelledby': id + '-tab-' + p.key,
      tabindex: '0', hidden: i !== 0,
    }, p.content));
    return b;
  });
  const select = (i, focus) => {
    buttons.forEach((b, j) => {
      b.setAttribute('aria-selected', j === i ? 'true' : 'false');
      b.tabIndex = j === i ? 0 : -1;
      panels[j].hidden = j !== i;
    });
    if (focus) buttons[i].focus();
    if (panes[i].onshow) panes[i].onshow(panels[i]);
  };
  buttons.forEach((b, i) => {
    b.addEventListener('click', () => select(i, false));
    b.addEventListener('keydown', (ev) => {
      let j = null;
      if (ev.key === 'ArrowRight') j = (i + 1) % buttons.length;
      else if (ev.key === 'ArrowLeft') j = (i - 1 + buttons.length) % buttons.length;
      else if (ev.key === 'Home') j = 0;
      else if (ev.key === 'End') j = buttons.length - 1;
      if (j !== null) {
        ev.preventDefault();
        select(j, true);
      }
    });
    list.appendChild(b);
  });
  return h('div.tabset', null, list, panels);
}

export function messageView(ctx, src) {
  let alive = true;
  const live = !src.id;
  const path = live
    ? '/accounts/' + api.seg(src.account) + '/messages/' + api.seg(src.uidl)
    : '/messages/' + api.seg(src.id);
  const rawPath = live ? path : path + '/raw';
  document.title = 'Message · pop3bridge';
  const body = h('div', { id: 'message-body' }, loading(live ? 'Retrieving the message from the mail server…' : 'Loading the stored message…'));
  const crumbs = live
    ? h('nav.crumbs', { 'aria-label': 'Breadcrumb' }, h('a', { href: '#/accounts' }, 'Accounts'), ' / ',
      h('a', { href: '#/accounts/' + api.seg(src.account) }, src.account), ' / message')
    : h('nav.crumbs', { 'aria-label': 'Breadcrumb' }, h('a', { href: '#/deliveries' }, 'Deliveries'), ' / stored message ', src.id);
  const title = h('h1', { id: 'message-subject' }, 'Message');
  add(ctx.main, crumbs, h('div.page-head', null, title), body);

  async function download(m, att, btn) {
    await withBusy(btn, 'Downloading…', async () => {
      try {
        let blob;
        if (typeof att.content === 'string') {
          blob = new Blob([b64ToBytes(att.content)], { type: 'application/octet-stream' });
        } else if (m.id) {
          const text = await api.request('/messages/' + api.seg(m.id) + '/attachments/' + api.seg(att.id), { accept: 'application/octet-stream', blob: true });
          blob = new Blob([text], { type: 'application/octet-stream' });
        } else {
          throw new Error('This attachment has no content to download.');
        }
        saveBlob(blob, att.filename || 'part-' + att.id);
      } catch (e) {
        toast('Could not download: ' + (e.detail || e.title || e.message), 'error');
      }
    });
  }

  async function loadSource(panel) {
    if (panel.dataset.loaded) return;
    panel.dataset.loaded = '1';
    fill(panel, loading('Loading the source…'));
    try {
      const text = await api.request(rawPath, { accept: 'message/rfc822' });
      if (!alive) return;
      const shown = text.length > SOURCE_SHOW_MAX ? text.slice(0, SOURCE_SHOW_MAX) : text;
      fill(panel, 
        text.length > SOURCE_SHOW_MAX ? h('p.notice.notice-warn', null, 'Only the first ' + fmtSize(SOURCE_SHOW_MAX) + ' are shown.') : null,
        h('pre.body.source', null, shown));
    } catch (e) {
      if (!alive) return;
      delete panel.dataset.loaded;
      fill(panel, errorBox(e, 'Could not load the source'));
    }
  }

  function render(m) {
    title.textContent = m.subject ?? '(no subject)';
    document.title = (m.subject || '(no subject)') + ' · pop3bridge';
    const fields = h('dl.fields', { id: 'message-fields' },
      h('dt', null, 'From'), h('dd', null, fmtAddress(m.from) || h('span.muted', null, '—')),
      m.sender ? [h('dt', null, 'Sender'), h('dd', null, fmtAddress(m.sender))] : null,
      h('dt', null, 'To'), h('dd', null, fmtAddresses(m.to) || h('span.muted', null, '—')),
      m.cc && m.cc.length ? [h('dt', null, 'Cc'), h('dd', null, fmtAddresses(m.cc))] : null,
      m.reply_to && m.reply_to.length ? [h('dt', null, 'Reply-To'), h('dd', null, fmtAddresses(m.reply_to))] : null,
      h('dt', null, 'Date'), h('dd', null, m.date ? timeEl(m.date) : h('span.muted', null, '—')),
      h('dt', null, 'Size'), h('dd', null, fmtSize(m.size)),
      m.message_id ? [h('dt', null, 'Message-ID'), h('dd.mono', null, m.message_id)] : null,
      m.uidl || src.uidl ? [h('dt', null, 'UIDL'), h('dd.mono', null, m.uidl || src.uidl)] : null,
      m.id ? [h('dt', null, 'Stored as'), h('dd.mono', null, m.id)] : null,
      m.received_at ? [h('dt', null, 'Received'), h('dd', null, timeEl(m.received_at))] : null);

    const panes = [];
    panes.push({
      key: 'text', label: 'Text',
      content: typeof m.text === 'string'
        ? h('pre.body', { id: 'message-text' }, m.text)
        : emptyState('No text part.', m.html ? 'This message has only an HTML part: see the HTML tab.' : null),
    });
    if (typeof m.html === 'string') {
      panes.push({
        key: 'html', label: 'HTML',
        content: [
          h('p.help', null, 'Shown in a sandbox: no scripts run and nothing is loaded from the network.'),
          htmlFrame(m.html, 'HTML part of the message'),
        ],
      });
    }
    const headers = Array.isArray(m.headers) ? m.headers : [];
    panes.push({
      key: 'headers', label: 'Headers (' + headers.length + ')',
      content: headers.length
        ? table('Header fields', [{ label: 'Name', cls: 'mono' }, { label: 'Value', cls: 'col-wide' }],
          headers.map((x) => ({ cells: [x.name, h('span.hval', null, x.value)] })), { cls: 'headers' })
        : emptyState('No header fields.'),
    });
    const atts = Array.isArray(m.attachments) ? m.attachments : [];
    panes.push({
      key: 'attachments', label: 'Attachments (' + atts.length + ')',
      content: atts.length
        ? table('Attachments', [{ label: 'Name' }, { label: 'Type', cls: 'mono' }, { label: 'Size', cls: 'num' },
          { label: 'Disposition' }, { label: 'Actions', cls: 'col-actions' }],
        atts.map((a) => ({
          cells: [a.filename || h('span.muted', null, '(part ' + a.id + ')'), a.content_type || '—', fmtSize(a.size),
            a.disposition || '—',
            (typeof a.content === 'string' || m.id)
              ? h('button.btn.btn-small', { type: 'button', onclick: (ev) => download(m, a, ev.currentTarget),
                'aria-label': 'Download ' + (a.filename || 'part ' + a.id) }, 'Download')
              : h('span.muted', null, '—')],
        })), { cls: 'attachments' })
        : emptyState('No attachments.'),
    });
    const sourceBox = h('div', { id: 'message-source' });
    panes.push({ key: 'source', label: 'Source', content: sourceBox, onshow: () => loadSource(sourceBox) });

    const errors = Array.isArray(m.parse_errors) ? m.parse_errors : [];
    fill(body, 
      fields,
      errors.length ? h('details.notice.notice-warn', null, h('summary', null, errors.length + ' problem(s) reading this message'),
        h('ul', null, errors.map((x) => h('li', null, x)))) : null,
      tabs('msg', panes),
      live ? h('div.actions.danger-zone', null,
        h('button.btn.btn-danger', { type: 'button', id: 'message-delete', onclick: (ev) => remove(ev.currentTarget) },
          'Delete from the server')) : null);
  }

  async function remove(btn) {
    const ok = await confirmDialog('Delete this message?',
      'This deletes the message with UIDL ' + src.uidl + ' from the mail server of ' + src.account + '. It cannot be undone.', 'Delete');
    if (!ok || !alive) return;
    try {
      await withBusy(btn, 'Deleting…', () => api.del(path));
      toast('Message deleted.', 'ok');
      if (alive) ctx.go('#/accounts/' + api.seg(src.account));
    } catch (e) {
      if (alive) toast('Could not delete: ' + (e.detail || e.title || e.message), 'error');
    }
  }

  (async () => {
    try {
      const m = await api.get(path);
      if (alive) render(m || {});
    } catch (e) {
      if (alive) fill(body, errorBox(e, 'Could not load the message'));
    }
  })();

  return { cleanup() { alive = false; } };
}
