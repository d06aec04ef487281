// The API reference: /openapi.yaml, parsed with the vendored js-yaml and
// shown as a readable page of its own (every string as text).

import { load as loadYaml } from '../../vendor/js-yaml/js-yaml.esm.min.js';
import { h, add, fill, table, badge, emptyState, errorBox, loading } from '../dom.js';

const METHODS = ['get', 'post', 'put', 'patch', 'delete', 'head', 'options', 'trace'];
const SPEC_MAX = 4 * 1024 * 1024; // characters of openapi.yaml we are willing to parse

function refName(ref) {
  const m = /^#\/components\/schemas\/(.+)$/.exec(ref || '');
  return m ? m[1].replace(/~1/g, '/').replace(/~0/g, '~') : ref;
}

function anchorId(kind, name) {
  return 'api-' + kind + '-' + String(name).replace(/[^A-Za-z0-9_-]+/g, '-');
}

function jumpTo(id) {
  const el = document.getElementById(id);
  if (!el) return;
  if (el.tagName === 'DETAILS') el.open = true;
  el.scrollIntoView({ block: 'start' });
  const s = el.querySelector('summary') || el;
  s.focus({ preventScroll: true });
}

// A schema as a short type expression; $refs become buttons that jump to
// the schema.
function typeOf(s, depth = 0) {
  if (!s || typeof s !== 'object') return h('span.muted', null, 'any');
  if (depth > 6) return '…';
  if (s.$ref) {
    const name = refName(s.$ref);
    return h('button.link.mono', { type: 'button', onclick: () => jumpTo(anchorId('schema', name)) }, name);
  }
  const alts = s.oneOf || s.anyOf;
  if (Array.isArray(alts)) {
    const parts = [];
    alts.forEach((a, i) => { if (i) parts.push(' | '); parts.push(typeOf(a, depth + 1)); });
    return h('span', null, parts);
  }
  if (Array.isArray(s.allOf)) {
    const parts = [];
    s.allOf.forEach((a, i) => { if (i) parts.push(' & '); parts.push(typeOf(a, depth + 1)); });
    return h('span', null, parts);
  }
  if (Array.isArray(s.enum)) return h('span.mono', null, s.enum.map((v) => JSON.stringify(v)).join(' | '));
  if (s.const !== undefined) return h('span.mono', null, JSON.stringify(s.const));
  const types = Array.isArray(s.type) ? s.type : s.type ? [s.type] : [];
  const parts = [];
  types.forEach((t, i) => {
    if (i) parts.push(' | ');
    if (t === 'array') parts.push(h('span', null, typeOf(s.items, depth + 1), '[]'));
    else parts.push(h('span.mono', null, t + (s.format && t !== 'null' ? ' (' + s.format + ')' : '')));
  });
  if (!parts.length) parts.push(h('span.mono', null, s.properties ? 'object' : 'any'));
  return h('span', null, parts);
}

function constraints(s) {
  if (!s || typeof s !== 'object') return '';
  const out = [];
  for (const k of ['minimum', 'maximum', 'minLength', 'maxLength', 'minItems', 'maxItems', 'pattern', 'default']) {
    if (s[k] !== undefined) out.push(k + ' ' + JSON.stringify(s[k]));
  }
  return out.join(', ');
}

function propsTable(s, caption) {
  if (!s || typeof s !== 'object' || !s.properties || typeof s.properties !== 'object') return null;
  const req = new Set(Array.isArray(s.required) ? s.required : []);
  const rows = Object.entries(s.properties).map(([name, p]) => ({
    cells: [h('span.mono', null, name), typeOf(p), req.has(name) ? 'yes' : h('span.muted', null, 'no'),
      h('span.desc', null, [p && p.description, constraints(p)].filter(Boolean).join(' — '))],
  }));
  return table(caption, [{ label: 'Field' }, { label: 'Type' }, { label: 'Required' }, { label: 'Description', cls: 'col-wide' }], rows, { cls: 'props' });
}

function text(s, cls) {
  return typeof s === 'string' && s.trim() ? h('p.' + (cls || 'desc'), null, s.trim()) : null;
}

function resolveParam(spec, p) {
  if (p && p.$ref) {
    const m = /^#\/components\/parameters\/(.+)$/.exec(p.$ref);
    if (m && spec.components && spec.components.parameters) return spec.components.parameters[m[1]] || p;
  }
  return p;
}

function resolveResponse(spec, r) {
  if (r && r.$ref) {
    const m = /^#\/components\/responses\/(.+)$/.exec(r.$ref);
    if (m && spec.components && spec.components.responses) return spec.components.responses[m[1]] || r;
  }
  return r;
}

function contentList(content) {
  if (!content || typeof content !== 'object') return null;
  return h('ul.content-types', null, Object.entries(content).map(([type, c]) =>
    h('li', null, h('span.mono', null, type), c && c.schema ? [': ', typeOf(c.schema)] : null)));
}

function operation(spec, path, method, op, shared) {
  const params = [...(shared || []), ...(Array.isArray(op.parameters) ? op.parameters : [])].map((p) => resolveParam(spec, p));
  const responses = op.responses && typeof op.responses === 'object' ? Object.entries(op.responses) : [];
  const id = anchorId('op', method + '-' + path);
  return h('details.op', { id },
    h('summary', null, badge(method.toUpperCase(), 'method-' + method), ' ', h('span.mono.op-path', null, path),
      op.summary ? h('span.op-summary', null, ' ' + op.summary) : null),
    h('div.op-body', null,
      text(op.description),
      op.security && Array.isArray(op.security) && op.security.length === 0 ? h('p.muted', null, 'No token needed.') : null,
      params.length ? [h('h4', null, 'Parameters'), table('Parameters',
        [{ label: 'Name' }, { label: 'In' }, { label: 'Type' }, { label: 'Required' }, { label: 'Description', cls: 'col-wide' }],
        params.map((p) => ({
          cells: [h('span.mono', null, p.name || '?'), p.in || '', typeOf(p.schema), p.required ? 'yes' : h('span.muted', null, 'no'),
            h('span.desc', null, [p.description, constraints(p.schema)].filter(Boolean).join(' — '))],
        })), { cls: 'params' })] : null,
      op.requestBody ? [h('h4', null, 'Request body'), text(op.requestBody.description), contentList(op.requestBody.content)] : null,
      responses.length ? [h('h4', null, 'Responses'), table('Responses',
        [{ label: 'Status' }, { label: 'Description', cls: 'col-wide' }, { label: 'Content' }],
        responses.map(([code, r0]) => {
          const r = resolveResponse(spec, r0) || {};
          return { cells: [h('span.mono', null, code), h('span.desc', null, r.description || ''), contentList(r.content) || h('span.muted', null, '—')] };
        }), { cls: 'responses' })] : null));
}

function renderSpec(spec) {
  const info = spec.info || {};
  const out = [];
  out.push(h('div.api-info', null,
    h('p', null, h('strong', null, info.title || 'API'), info.version ? ' — version ' + info.version : '',
      spec.openapi ? h('span.muted', null, ' (OpenAPI ' + spec.openapi + ')') : null),
    text(info.description)));

  // the endpoints, grouped by their first tag, in file order
  const groups = new Map();
  const paths = spec.paths && typeof spec.paths === 'object' ? spec.paths : {};
  for (const [path, item] of Object.entries(paths)) {
    if (!item || typeof item !== 'object') continue;
    for (const m of METHODS) {
      const op = item[m];
      if (!op || typeof op !== 'object') continue;
      const tag = Array.isArray(op.tags) && op.tags.length ? op.tags[0] : 'Other';
      if (!groups.has(tag)) groups.set(tag, []);
      groups.get(tag).push(operation(spec, path, m, op, item.parameters));
    }
  }
  const tagInfo = new Map((Array.isArray(spec.tags) ? spec.tags : []).map((t) => [t.name, t]));
  const toc = h('nav.api-toc', { 'aria-label': 'API sections' }, h('ul', null,
    [...groups.keys()].map((t) => h('li', null, h('button.link', { type: 'button', onclick: () => jumpTo(anchorId('tag', t)) }, t))),
    spec.webhooks ? h('li', null, h('button.link', { type: 'button', onclick: () => jumpTo('api-webhooks') }, 'Webhooks')) : null,
    spec.components && spec.components.schemas ? h('li', null, h('button.link', { type: 'button', onclick: () => jumpTo('api-schemas') }, 'Schemas')) : null));
  out.push(toc);
  if (!groups.size) out.push(emptyState('The document lists no endpoints.'));
  for (const [tag, ops] of groups) {
    out.push(h('section.api-group', { id: anchorId('tag', tag), tabindex: '-1' },
      h('h2', null, tag), text(tagInfo.get(tag) && tagInfo.get(tag).description), ops));
  }
  if (spec.webhooks && typeof spec.webhooks === 'object') {
    const ops = [];
    for (const [name, item] of Object.entries(spec.webhooks)) {
      for (const m of METHODS) if (item && item[m]) ops.push(operation(spec, name, m, item[m], item.parameters));
    }
    out.push(h('section.api-group', { id: 'api-webhooks', tabindex: '-1' }, h('h2', null, 'Webhooks'),
      h('p.desc', null, 'Requests the bridge sends to your webhook URLs.'), ops));
  }
  const schemes = spec.components && spec.components.securitySchemes;
  if (schemes && typeof schemes === 'object') {
    out.push(h('section.api-group', null, h('h2', null, 'Authentication'),
      Object.entries(schemes).map(([name, s]) => h('p', null, h('span.mono', null, name), ': ',
        [s.type, s.scheme, s.bearerFormat].filter(Boolean).join(' '), s.description ? ' — ' + s.description : ''))));
  }
  const schemas = spec.components && spec.components.schemas;
  if (schemas && typeof schemas === 'object') {
    out.push(h('section.api-group', { id: 'api-schemas', tabindex: '-1' }, h('h2', null, 'Schemas'),
      Object.entries(schemas).map(([name, s]) => h('details.schema', { id: anchorId('schema', name) },
        h('summary', null, h('span.mono', null, name), ' ', h('span.muted', null, s && s.type ? String(s.type) : '')),
        h('div.op-body', null, text(s && s.description), h('p', null, 'Type: ', typeOf(s)),
          propsTable(s, 'Fields of ' + name))))));
  }
  return out;
}

export function apiDocView(ctx) {
  document.title = 'API · pop3bridge';
  let alive = true;
  const body = h('div', { id: 'api-body' }, loading('Loading openapi.yaml…'));
  add(ctx.main, 
    h('div.page-head', null, h('h1', null, 'API'),
      h('div.page-tools', null, h('a.btn', { href: 'openapi.yaml', download: 'openapi.yaml' }, 'Download openapi.yaml'))),
    h('p.help', null, 'Every endpoint under /api/v1 takes the header Authorization: Bearer <token>.'),
    body);
  (async () => {
    try {
      const res = await fetch('openapi.yaml', { cache: 'no-store', credentials: 'omit', redirect: 'error' });
      if (!res.ok) {
        const err = new Error('openapi.yaml could not be loaded');
        err.status = res.status;
        throw err;
      }
      const src = await res.text();
      if (src.length > SPEC_MAX) throw new Error('openapi.yaml is larger than ' + SPEC_MAX + ' characters');
      const spec = loadYaml(src);
      if (!spec || typeof spec !== 'object') throw new Error('openapi.yaml holds no OpenAPI document');
      if (alive) fill(body, renderSpec(spec));
    } catch (e) {
      if (alive) fill(body, errorBox(e, 'Could not show the API'));
    }
  })();
  return { cleanup() { alive = false; } };
}
