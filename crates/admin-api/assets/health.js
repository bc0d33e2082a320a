// Each integration's health in the integrations table: ok / red / idle with the reasons in
// words, when its CRM last reached us (and when a request of it was last refused, and why),
// events in the last hour and the share that counted, dead letters, failing directory lookups, and what matched in the last hour. Filled in after the
// table is drawn (one request per integration). Uses the helpers of app.js, loaded before it.
'use strict';

const HEALTH_LABELS = { ok: 'OK', red: 'Needs attention', idle: 'Idle' };
const ago = (iso) => {
  if (!iso) return 'never';
  const minutes = Math.round((Date.now() - Date.parse(iso)) / 60000);
  return minutes < 1 ? 'just now' : minutes < 120 ? `${minutes} min ago` : `${Math.round(minutes / 60)} h ago`;
};

const share = (s) => (s === null || s === undefined ? '–' : `${Math.round(s * 100)}%`);

function showHealth(cell, h) {
  const reasons = h.reasons.length ? el('ul', { class: 'reasons' }, ...h.reasons.map((r) => el('li', { text: r }))) : null;
  // replaceChildren writes a null as the text "null": the optional lines are left out instead.
  const lines = [
    el('span', { class: `badge health-${h.state}`, text: HEALTH_LABELS[h.state] || h.state }),
    el('div', { text: `Last webhook ${ago(h.last_webhook_at)}` }),
    h.last_refused_webhook_at ? el('div', { text: `Last refused request ${ago(h.last_refused_webhook_at)}: ${h.last_webhook_refusal}` }) : null,
    el('div', { text: `Last hour: ${h.events_last_hour} events, ${share(h.matched_share_last_hour)} counted` }),
    el('div', { text: `Last hour: ${h.matched_last_hour} matched (${h.unmapped_last_hour} unmapped), ${h.retracted_last_hour} retracted` }),
    el('div', { text: `Dead letters: ${h.dead_letters_last_hour} last hour, ${h.dead_letters_last_day} last day` }),
    h.directory_lookups_failing ? el('div', { text: `Directory lookups failing: ${h.directory_lookups_failing}` }) : null,
    el('div', { text: `Last reconciliation ${ago(h.last_reconciliation_at)}` }),
    reasons,
  ];
  cell.replaceChildren(...lines.filter((line) => line !== null));
}

/// A table cell that shows the integration's health once it has loaded.
function healthCell(integration) {
  const cell = el('td', { class: 'health', 'aria-label': `Health of ${integration.name}`, text: '…' });
  api('GET', `${company()}/integrations/${integration.id}/health`)
    .then((h) => showHealth(cell, h))
    .catch((e) => { cell.textContent = e.message; });
  return cell;
}
