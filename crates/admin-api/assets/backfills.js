// The integration's pulls on the management page: its sync status (last webhook, last
// reconciliation, missed webhooks fixed) and its backfills with a progress bar that refreshes
// while one runs; admins start ("Start backfill", since a date, 30 days ago by default) and
// cancel them. Uses the helpers of app.js (api, el, company, isAdmin, ...), loaded before it.
'use strict';

const sync = { cursor: null, timer: null, generation: 0 };
const REFRESH_MS = 1500;
const time = (iso) => (iso ? iso.replace('T', ' ').slice(0, 19) : '');

function formatDuration(secs) {
  const h = Math.floor(secs / 3600); const m = Math.floor((secs % 3600) / 60); const s = secs % 60;
  if (h) return `${h}h ${String(m).padStart(2, '0')}m`;
  if (m) return `${m}m ${String(s).padStart(2, '0')}s`;
  return `${s}s`;
}

const active = (job) => job.state === 'pending' || job.state === 'running';

/// "45.0% · 450 of 1000 scanned · 440 published · 30.0 records/s · ETA 18s"
function progressText(job) {
  const parts = [];
  if (job.percent !== null && job.percent !== undefined) parts.push(`${job.percent.toFixed(1)}%`);
  parts.push(job.records_expected !== null && job.records_expected !== undefined
    ? `${job.records_scanned} of ${job.records_expected} scanned` : `${job.records_scanned} scanned`);
  parts.push(`${job.records_published} published`);
  if (job.rate_per_sec !== null && job.rate_per_sec !== undefined && job.started_at) parts.push(`${job.rate_per_sec.toFixed(1)} records/s`);
  if (job.eta_secs !== null && job.eta_secs !== undefined) parts.push(`ETA ${formatDuration(job.eta_secs)}`);
  if (job.cancel_requested && active(job)) parts.push('stopping');
  return parts.join(' · ');
}

function progressCell(job) {
  // Without a known size the bar is indeterminate (no value).
  const bar = el('progress', { max: '100', 'aria-label': `Progress of the backfill since ${job.since.slice(0, 10)}` });
  if (job.percent !== null && job.percent !== undefined) bar.value = job.percent;
  const cell = el('td', {}, el('div', { class: 'progress' }, bar, el('span', { class: 'progress-text', text: progressText(job) })));
  if (job.last_error) cell.append(el('div', { class: 'error', text: `Last error: ${job.last_error}` }));
  return cell;
}

function backfillRow(job, integrationId) {
  const actions = el('td', {});
  if (isAdmin() && active(job) && !job.cancel_requested) {
    actions.append(el('button', {
      type: 'button', text: 'Cancel', 'aria-label': `Cancel the backfill since ${job.since.slice(0, 10)}`,
      onclick: async () => {
        if (!confirm('Stop this backfill? What it pulled so far stays.')) return;
        try {
          const j = await api('POST', `${company()}/integrations/${integrationId}/backfills/${job.id}/cancel`);
          flash(j.state === 'cancelled' ? 'Backfill cancelled.' : 'Backfill asked to stop: it ends after its current page.');
          await loadSync();
        } catch (e) { flash(e.message); }
      },
    }));
  }
  return el('tr', { 'data-job': job.id },
    el('td', {}, el('span', { class: `badge ${job.state}`, text: job.state })),
    el('td', { text: time(job.since) }), el('td', { text: job.objects.join(', ') }),
    progressCell(job), el('td', { text: job.requested_by }), el('td', { text: time(job.started_at) }), actions);
}

function fact(name, value) { return [el('dt', { text: name }), el('dd', { text: value })]; }

/// How a reconciliation ended, after its figures: a run that failed as a whole, or the objects
/// the CRM refused while the others were reconciled (the run itself went through).
function reconciliationEnd(r) {
  if (r.error) return `; failed: ${r.error}`;
  const notRead = r.objects_not_read || []; // absent from an older admin-api
  return notRead.map((o) => `; could not read ${o.object}: ${o.error}`).join('');
}

function showStatus(status) {
  const r = status.last_reconciliation;
  const reconciliation = !r ? 'never'
    : `${time(r.at)}: ${r.records_scanned} scanned, ${r.records_published} published, ${r.api_calls} API calls${reconciliationEnd(r)}`;
  const b = status.active_backfill;
  $('sync-status').replaceChildren(
    ...fact('Last webhook received', status.last_webhook_at ? time(status.last_webhook_at) : 'never'),
    ...(status.last_refused_webhook_at
      ? fact('Last webhook request refused', `${time(status.last_refused_webhook_at)}: ${status.last_webhook_refusal}`)
      : []),
    ...fact('Last reconciliation', reconciliation),
    ...fact('Missed webhooks fixed', `${status.missed_webhooks_fixed}${status.last_fixed_at ? ` (last ${time(status.last_fixed_at)})` : ''}`),
    ...fact('Backfill in progress', b ? `${b.state}: ${progressText(b)}` : 'none'));
}

/// The selected integration's status and newest backfills; polls again while one is active.
async function loadSync(more) {
  clearTimeout(sync.timer);
  if (!state.session) return; // signed out meanwhile
  const id = $('sync-integration').value;
  const generation = more ? sync.generation : ++sync.generation;
  if (!id) { $('sync-status').replaceChildren(); $('backfills-body').replaceChildren(); return; }
  const base = `${company()}/integrations/${id}`;
  const [status, page] = await Promise.all([
    more ? null : api('GET', `${base}/sync-status`),
    api('GET', `${base}/backfills${query({ limit: 20, cursor: more ? sync.cursor : null })}`),
  ]);
  if (generation !== sync.generation) return;
  if (status) {
    showStatus(status);
    // One backfill of an integration at a time: the API would refuse a second one.
    const start = $('backfill-form').querySelector('button[type="submit"]');
    start.disabled = Boolean(status.active_backfill);
    start.title = status.active_backfill ? 'A backfill of this integration is in progress' : '';
  }
  const body = $('backfills-body');
  if (!more) body.replaceChildren();
  sync.cursor = page.next_cursor;
  $('backfills-more').hidden = !page.next_cursor;
  for (const job of page.items) body.append(backfillRow(job, id));
  if (!body.children.length) body.append(el('tr', {}, el('td', { colspan: '7', text: 'No backfills yet.' })));
  const visible = !$('integrations').hidden && $('sync').open;
  if (status && status.active_backfill && visible) sync.timer = setTimeout(() => loadSync().catch(reportUnexpected), REFRESH_MS);
}

async function startBackfill(event) {
  event.preventDefault();
  const form = event.target;
  clearError('backfill-error', form);
  await guarded('backfill-error', async () => {
    const objects = $('backfill-objects').value.split(',').map((o) => o.trim()).filter(Boolean);
    const body = { since: $('backfill-since').value };
    if (objects.length) body.objects = objects;
    const job = await api('POST', `${company()}/integrations/${$('sync-integration').value}/backfills`, body);
    flash(`Backfill of ${job.objects.join(', ')} since ${job.since.slice(0, 10)} started.`);
    await loadSync();
  }, form);
}

document.addEventListener('DOMContentLoaded', () => {
  const monthAgo = new Date(Date.now() - 30 * 86400e3).toISOString().slice(0, 10);
  $('backfill-since').value = monthAgo;
  $('backfill-since').max = new Date().toISOString().slice(0, 10);
  $('sync-integration').addEventListener('change', () => loadSync().catch(reportUnexpected));
  $('sync').addEventListener('toggle', () => loadSync().catch(reportUnexpected));
  $('backfills-more').addEventListener('click', () => loadSync(true).catch(reportUnexpected));
  $('backfill-form').addEventListener('submit', startBackfill);
});
