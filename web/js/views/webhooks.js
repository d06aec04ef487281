// The webhooks: per webhook its deliveries in the last hour and day, success
// rate, p50/p99 latency, last error and filter (GET /api/v1/webhooks); and a
// chart of messages received and delivery attempts per hour over the last
// 48 h (GET /api/v1/stats/hourly), drawn here as inline SVG.

import * as api from '../api.js';
import { h, add, fill, table, badge, emptyState, errorBox, loading, fmtMs, timeEl, withBusy } from '../dom.js';

const HOURS = 48;
const SVG_NS = 'http://www.w3.org/2000/svg';
const CHART = { width: 960, height: 220, left: 40, right: 10, top: 10, bottom: 28 };

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c);
  return el;
}

function pct(v) {
  return typeof v === 'number' ? (v * 100).toFixed(v === 1 || v === 0 ? 0 : 1) + ' %' : '—';
}

// Two bars per hour (received, attempts), scaled to the busiest hour.
export function trafficChart(hours) {
  const n = hours.length;
  const max = Math.max(1, ...hours.map((x) => Math.max(x.received, x.attempts)));
  const plotW = CHART.width - CHART.left - CHART.right;
  const plotH = CHART.height - CHART.top - CHART.bottom;
  const slot = plotW / Math.max(1, n);
  const barW = Math.max(1, slot / 2 - 1);
  const y0 = CHART.top + plotH;
  const root = svg('svg', {
    id: 'traffic-chart', class: 'chart', viewBox: '0 0 ' + CHART.width + ' ' + CHART.height,
    role: 'img', 'aria-labelledby': 'traffic-title traffic-desc',
  });
  const total = (k) => hours.reduce((s, x) => s + x[k], 0);
  root.append(svg('title', { id: 'traffic-title' }, 'Messages received and delivery attempts per hour, last ' + n + ' hours'),
    svg('desc', { id: 'traffic-desc' }, total('received') + ' messages received and ' + total('attempts') +
      ' delivery attempts (' + total('delivered') + ' answered 2xx); busiest hour: ' + max + '.'));
  root.append(svg('line', { class: 'axis', x1: CHART.left, y1: y0, x2: CHART.width - CHART.right, y2: y0 }));
  root.append(svg('text', { class: 'tick', x: CHART.left - 4, y: CHART.top + 10, 'text-anchor': 'end' }, String(max)));
  root.append(svg('text', { class: 'tick', x: CHART.left - 4, y: y0, 'text-anchor': 'end' }, '0'));
  hours.forEach((x, i) => {
    const x0 = CHART.left + i * slot;
    const start = new Date(x.start);
    for (const [k, cls, dx] of [['received', 'bar-received', 0], ['attempts', 'bar-attempts', barW + 1]]) {
      if (!x[k]) continue;
      const hgt = Math.max(1, (x[k] / max) * plotH);
      add(root, svg('rect', {
        class: 'bar ' + cls, x: (x0 + dx).toFixed(1), y: (y0 - hgt).toFixed(1), width: barW.toFixed(1), height: hgt.toFixed(1),
        'data-hour': x.start, 'data-count': x[k],
      }, svg('title', null, start.toLocaleString() + ': ' + x[k] + ' ' + (k === 'received' ? 'received' : 'delivery attempts' +
        (k === 'attempts' ? ' (' + x.delivered + ' 2xx)' : '')))));
    }
    if (start.getHours() % 6 === 0) {
      root.append(svg('text', { class: 'tick', x: (x0 + slot / 2).toFixed(1), y: CHART.height - 10, 'text-anchor': 'middle' },
        String(start.getHours()).padStart(2, '0') + ':00'));
    }
  });
  return root;
}

export function webhooksView(ctx) {
  document.title = 'Webhooks · pop3bridge';
  let alive = true;
  const list = h('div', { id: 'webhooks-body' }, loading('Reading the statistics…'));
  const chart = h('div.chart-wrap', { id: 'traffic' }, loading('Reading the traffic…'));
  add(ctx.main,
    h('div.page-head', null, h('h1', null, 'Webhooks'),
      h('div.page-tools', null,
        h('button.btn', { type: 'button', id: 'webhooks-refresh', onclick: (ev) => withBusy(ev.currentTarget, 'Refreshing…', load) }, 'Refresh'))),
    list,
    h('h2', null, 'Traffic, last ' + HOURS + ' hours'),
    h('p.legend', null, h('span.key.key-received', { 'aria-hidden': 'true' }), ' messages received  ',
      h('span.key.key-attempts', { 'aria-hidden': 'true' }), ' delivery attempts (all webhooks), by hour in your time zone'),
    chart);

  function renderList(whs) {
    if (!whs.length) {
      fill(list, emptyState('No webhooks are configured.'));
      return;
    }
    const cols = [
      { label: 'Webhook' }, { label: 'Accounts' }, { label: 'Last hour', cls: 'num' }, { label: 'Last day', cls: 'num' },
      { label: 'Success (day)', cls: 'num' }, { label: 'p50', cls: 'num' }, { label: 'p99', cls: 'num' },
      { label: 'Last error' }, { label: 'Filter' },
    ];
    const rows = whs.map((w) => {
      const s = w.stats || {};
      const le = s.last_error;
      return {
        attrs: { dataset: { webhook: w.name } },
        cells: [
          h('span', null, h('strong', null, w.name), w.disabled ? [' ', badge('disabled (410)', 'error')] : null),
          (w.accounts || []).join(', ') || h('span.muted', null, 'none'),
          h('span', { dataset: { stat: 'hour' }, title: s.delivered_last_hour + ' answered 2xx' }, String(s.attempts_last_hour)),
          h('span', { dataset: { stat: 'day' }, title: s.delivered_last_day + ' answered 2xx' }, String(s.attempts_last_day)),
          h('span', { dataset: { stat: 'success' } }, pct(s.success_rate)),
          h('span', { dataset: { stat: 'p50' } }, fmtMs(s.p50_ms)),
          h('span', { dataset: { stat: 'p99' } }, fmtMs(s.p99_ms)),
          le ? h('span.last-error', { dataset: { stat: 'error' } },
            le.http_status ? badge('HTTP ' + le.http_status, 'error') : null, ' ', le.error || '', ' ', timeEl(le.at))
            : h('span.muted', { dataset: { stat: 'error' } }, 'none'),
          Object.prototype.hasOwnProperty.call(w, 'filter') && w.filter
            ? h('pre.filter', { dataset: { stat: 'filter' } }, JSON.stringify(w.filter, null, 1))
            : h('span.muted', { dataset: { stat: 'filter' } }, 'all messages'),
        ],
      };
    });
    fill(list, table('Webhooks and their deliveries', cols, rows, { cls: 'webhooks' }),
      h('p.muted', null, 'Counts are delivery attempts; success is the share answered 2xx in the last 24 hours; latencies over the same attempts.'));
  }

  async function load() {
    const [whs, hourly] = await Promise.allSettled([api.get('/webhooks'), api.get('/stats/hourly', { hours: HOURS })]);
    if (!alive) return;
    if (whs.status === 'fulfilled') renderList(Array.isArray(whs.value && whs.value.webhooks) ? whs.value.webhooks : []);
    else fill(list, errorBox(whs.reason, 'Could not read the webhooks'));
    if (hourly.status === 'fulfilled') fill(chart, trafficChart(Array.isArray(hourly.value && hourly.value.hours) ? hourly.value.hours : []));
    else fill(chart, errorBox(hourly.reason, 'Could not read the traffic'));
  }

  load();
  return { cleanup() { alive = false; } };
}
