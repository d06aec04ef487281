// DOM and formatting helpers.  Everything that reaches the page goes through
// h(), which sets text with textContent: content from mail servers and the
// API is never parsed as HTML here.

// h('tag.class', {attr: value, onclick: fn}, child, ...) -> Element.
// Children: strings and numbers become text nodes, null/undefined/false are
// skipped, arrays are flattened.
export function h(spec, attrs, ...children) {
  const [tag, ...classes] = spec.split('.');
  const el = document.createElement(tag || 'div');
  if (classes.length) el.className = classes.join(' ');
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') {
        el.addEventListener(k.slice(2), v);
      } else if (k === 'class') {
        el.className = (el.className ? el.className + ' ' : '') + v;
      } else if (k === 'dataset') {
        Object.assign(el.dataset, v);
      } else if (k === 'text') {
        el.textContent = String(v);
      } else if (k === 'hidden' || k === 'disabled' || k === 'checked' || k === 'selected' ||
                 k === 'required' || k === 'autofocus') {
        el[k] = Boolean(v);
      } else if (k === 'value') {
        el.value = v;
      } else {
        el.setAttribute(k, v === true ? '' : String(v));
      }
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
  return el;
}

// Add children to el (with h()'s rules: null/false skipped, arrays
// flattened, strings as text); returns el.
export function add(el, ...children) {
  return append(el, children);
}

// Replace el's children.
export function fill(el, ...children) {
  return append(clear(el), children);
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// ---- times: the API's times shown in the viewer's own zone --------------

const dateFmt = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric',
  hour: '2-digit', minute: '2-digit', second: '2-digit',
});

export function timeZoneName() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || '';
  } catch (_) {
    return '';
  }
}

// An API time (RFC 3339 string, or Unix time in ms or s) as a Date, or null
// for "never" (null, 0, "").
export function parseTime(v) {
  if (v === null || v === undefined || v === '' || v === 0) return null;
  let d;
  if (typeof v === 'number') d = new Date(v > 1e11 ? v : v * 1000);
  else d = new Date(String(v));
  return isNaN(d.getTime()) ? null : d;
}

export function relative(d, now = Date.now()) {
  const s = Math.round((d.getTime() - now) / 1000);
  const a = Math.abs(s);
  let txt;
  if (a < 5) return 'just now';
  if (a < 60) txt = a + ' s';
  else if (a < 3600) txt = Math.round(a / 60) + ' min';
  else if (a < 86400 * 2) txt = Math.round(a / 3600) + ' h';
  else txt = Math.round(a / 86400) + ' days';
  return s < 0 ? txt + ' ago' : 'in ' + txt;
}

// <time> with the local date and time, the relative time, and UTC as title.
export function timeEl(v, opts = {}) {
  const d = parseTime(v);
  if (!d) return h('span.muted', null, opts.never || 'never');
  return h('time', { datetime: d.toISOString(), title: d.toISOString().replace('.000Z', 'Z') + ' (UTC)' },
    dateFmt.format(d), opts.relative === false ? null : h('span.rel', null, ' (' + relative(d) + ')'));
}

export function fmtSize(n) {
  if (typeof n !== 'number' || !isFinite(n)) return '—';
  if (n < 1024) return n + ' B';
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = -1;
  do {
    v /= 1024;
    i++;
  } while (v >= 1024 && i < units.length - 1);
  return (v >= 10 ? v.toFixed(0) : v.toFixed(1)) + ' ' + units[i];
}

export function fmtMs(n) {
  if (typeof n !== 'number' || !isFinite(n)) return '—';
  if (n < 1000) return n + ' ms';
  return (n / 1000).toFixed(n < 10000 ? 2 : 1) + ' s';
}

// "Name <address>", or the address, or the name, or ''.
export function fmtAddress(a) {
  if (!a) return '';
  if (typeof a === 'string') return a;
  if (a.name && a.address) return a.name + ' <' + a.address + '>';
  return a.address || a.name || '';
}

export function fmtAddresses(list) {
  if (!Array.isArray(list)) return fmtAddress(list);
  return list.map(fmtAddress).filter(Boolean).join(', ');
}

// ---- common pieces -------------------------------------------------------

// A table: columns [{label, cls}] and rows of cells (each an array of
// children, or an object {content, cls}).  Cells carry data-label so narrow
// windows can show each row as a card.
export function table(caption, columns, rows, opts = {}) {
  const thead = h('thead', null, h('tr', null, columns.map((c) => h('th', { scope: 'col', class: c.cls }, c.label))));
  const tbody = h('tbody', null, rows.map((r) => {
    const tr = h('tr', r.attrs || null);
    r.cells.forEach((cell, i) => {
      const c = columns[i];
      tr.appendChild(h('td', { 'data-label': c.label, class: c.cls }, cell));
    });
    return tr;
  }));
  const t = h('table.data' + (opts.cls ? '.' + opts.cls : ''), null,
    caption ? h('caption.visually-hidden', null, caption) : null, thead, tbody);
  return h('div.table-wrap', null, t);
}

export function badge(text, kind) {
  return h('span.badge.badge-' + (kind || 'neutral'), null, text);
}

// An account's last_error_code (openapi AccountErrorCode) in words; the code itself
// stays in data-code and the tooltip for people who script against the API.
const ERROR_CODE_LABEL = {
  login_delay: 'Login delay', in_use: 'Mailbox in use', sys_temp: 'Server: temporary',
  sys_perm: 'Server: permanent', auth: 'Wrong credentials', no_grant: 'No OAuth2 grant',
  network: 'Network', timeout: 'Timeout', tls: 'TLS', protocol: 'Protocol',
  server: 'Server refused', limit: 'Limit', internal: 'Internal',
};

export function errorCodeBadge(code) {
  if (!code) return null;
  const kind = code === 'login_delay' || code === 'in_use' || code === 'sys_temp' ? 'warn' : 'error';
  return h('span.badge.badge-' + kind + '.error-code', { dataset: { code }, title: 'last_error_code: ' + code },
    ERROR_CODE_LABEL[code] || code);
}

export function emptyState(title, text) {
  return h('div.empty', { role: 'note' }, h('p.empty-title', null, title), text ? h('p', null, text) : null);
}

// An error box from an ApiError or any Error.
export function errorBox(err, what) {
  const parts = [];
  if (err && err.status) parts.push(h('span.err-status', null, 'HTTP ' + err.status));
  const title = err && err.title ? err.title : (err && err.message) || 'Something went wrong';
  return h('div.notice.notice-error', { role: 'alert' },
    h('p', null, h('strong', null, what ? what + ': ' : ''), title, parts.length ? ' ' : null, parts),
    err && err.detail && err.detail !== title ? h('p.detail', null, err.detail) : null,
    err && err.retryAfter ? h('p.detail', null, 'The server asks to retry after ' + err.retryAfter + ' s.') : null);
}

export function loading(text) {
  return h('p.loading', { role: 'status' }, h('span.spinner', { 'aria-hidden': 'true' }), text || 'Loading…');
}

let toastTimer = null;
export function toast(text, kind) {
  const el = document.getElementById('toast');
  if (!el) return;
  el.textContent = text;
  el.className = 'toast show' + (kind ? ' toast-' + kind : '');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    el.className = 'toast';
  }, 5000);
}

// A modal confirmation (the page's own <dialog>, not window.confirm).
// Resolves true when the person chose the confirming button.
export function confirmDialog(title, text, okLabel) {
  const dlg = document.getElementById('confirm');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-ok').textContent = okLabel || 'OK';
  const opener = document.activeElement;
  return new Promise((resolve) => {
    dlg.returnValue = 'cancel';
    const done = () => {
      dlg.removeEventListener('close', done);
      if (opener && opener.isConnected && typeof opener.focus === 'function') opener.focus();
      resolve(dlg.returnValue === 'ok');
    };
    dlg.addEventListener('close', done);
    dlg.showModal();
    document.getElementById('confirm-cancel').focus();
  });
}

// Busy state for a button while a promise runs.
export async function withBusy(btn, label, fn) {
  const old = btn.textContent;
  btn.disabled = true;
  btn.setAttribute('aria-busy', 'true');
  if (label) btn.textContent = label;
  try {
    return await fn();
  } finally {
    if (btn.isConnected) {
      btn.disabled = false;
      btn.removeAttribute('aria-busy');
      btn.textContent = old;
    }
  }
}
