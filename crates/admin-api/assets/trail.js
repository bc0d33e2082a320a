// The record trail on the management page: "why didn't this deal count?". An admin (or viewer)
// types a CRM record id or picks a recent event, and reads each event received, every active
// workflow's decision with the reason in words, what followed (the activity, its user), and the
// record's dead letters; the integration's dead letters are listed below. Uses the helpers of
// app.js (api, el, company, query, ...), loaded before it.
'use strict';

const trail = { generation: 0, cursors: {} };
const trailTime = (iso) => (iso ? iso.replace('T', ' ').slice(0, 19) : '');
const DECISION_LABELS = { counted: 'counted', still_counts: 'still counts', retracted: 'retracted', not_counted: 'did not count' };
const SUMMARY_LABELS = { matched: 'counted', retracted: 'retracted', no_match: 'did not count', unchanged: 'nothing new' };

function trailSource(e) {
  const parts = [e.crm, e.source];
  if (e.source_change_type) parts.push(e.source_change_type);
  return parts.join(' ');
}

function decisionItem(d) {
  const label = DECISION_LABELS[d.decision] || d.decision;
  const good = d.decision === 'counted' || d.decision === 'still_counts';
  const head = el('div', {},
    el('strong', { text: `${d.workflow}: ` }),
    el('span', { class: good ? 'match' : 'nomatch', text: label }),
    d.reason ? el('span', { class: 'help', text: ` (${d.reason.replaceAll('_', ' ')})` }) : null);
  const why = d.explanation.length ? el('ul', { class: 'reasons' }, ...d.explanation.map((r) => el('li', { text: r }))) : null;
  return el('li', { class: 'decision' }, head, why);
}

function eventCard(e) {
  const delivery = e.delivery_id ? `, delivery ${e.delivery_id}` : '';
  const decisions = e.decisions.length
    ? el('ul', { class: 'decisions' }, ...e.decisions.map(decisionItem))
    : el('p', { class: 'help', text: e.summary === 'unchanged'
      ? 'Nothing the workflows read was new (a repeated or older delivery).'
      : `No active workflow for ${e.object_type}.` });
  return el('li', { class: 'card trail-event', 'data-event': e.event_id },
    el('div', {},
      el('strong', { text: `${trailTime(e.judged_at)} · ${e.change_type} · ` }),
      el('span', { class: e.summary === 'matched' ? 'match' : 'nomatch', text: SUMMARY_LABELS[e.summary] || e.summary })),
    el('div', { class: 'help', text: `via ${trailSource(e)} (event ${e.event_id}${delivery})` }),
    decisions);
}

function deadLetterRow(d) {
  return el('tr', {},
    el('td', { text: trailTime(d.at) }), el('td', { text: `${d.object_type} ${d.record_id}` }),
    el('td', {}, el('strong', { text: d.reason }), el('div', { class: 'secret', text: d.detail })),
    el('td', { text: `${d.service}: ${d.topic} ${d.partition}/${d.offset}` }));
}

function showStory(t) {
  const story = $('trail-story');
  const parts = [el('h3', { id: 'trail-story-title', text: `Record ${t.record_id}` })];
  if (!t.events.length && !t.followed.length && !t.dead_letters.length) {
    parts.push(el('p', { text: 'Nothing recorded for this record. Check the record id and the integration; events are kept for the retention period only.' }));
  }
  if (t.followed.length) {
    parts.push(el('h4', { text: 'What followed' }),
      el('ul', { class: 'followed' }, ...t.followed.map((a) => el('li', { text: `${a.workflow}: ${a.summary} (${a.activity_type} ${a.value})` }))));
  }
  if (t.dead_letters.length) {
    parts.push(el('h4', { text: 'Dead letters' }),
      el('table', {}, el('tbody', {}, ...t.dead_letters.map(deadLetterRow))));
  }
  if (t.events.length) {
    parts.push(el('h4', { text: 'Events, newest first' }), el('ol', { class: 'trail-events' }, ...t.events.map(eventCard)));
  }
  story.replaceChildren(...parts);
}

async function showTrail(recordId) {
  const id = $('trail-integration').value;
  clearError('trail-error', $('trail-form'));
  await guarded('trail-error', async () => {
    const t = await api('GET', `${company()}/integrations/${id}/records/${encodeURIComponent(recordId)}/trail`);
    showStory(t);
  }, $('trail-form'));
}

function recentRow(e) {
  return el('tr', {},
    el('td', { text: trailTime(e.judged_at) }),
    el('td', {}, el('button', {
      type: 'button', text: e.record_id, 'aria-label': `Show the trail of ${e.object_type} ${e.record_id}`,
      onclick: () => { $('trail-record').value = e.record_id; showTrail(e.record_id); },
    })),
    el('td', { text: `${e.object_type} ${e.change_type}` }), el('td', { text: trailSource(e) }),
    el('td', { class: e.summary === 'matched' ? 'match' : 'nomatch', text: SUMMARY_LABELS[e.summary] || e.summary }));
}

/// The two lists the section pages through: each API path, its rows and its "more" button.
const TRAIL_LISTS = {
  recent: {
    path: 'trail', body: 'trail-recent-body', more: 'trail-recent-more', row: recentRow, columns: '5',
    empty: 'No events in the retention period.',
    filter: () => ({ summary: $('trail-only-unmatched').checked ? 'no_match' : null }),
  },
  dead: {
    path: 'dead-letters', body: 'trail-dead-body', more: 'trail-dead-more', row: deadLetterRow, columns: '4',
    empty: 'No dead letters.', filter: () => ({}),
  },
};

/// One page of a list: the first (replacing what is shown) or, with `more`, the next older one
/// after the cursor the previous page returned.
async function loadTrailPage(name, more) {
  const list = TRAIL_LISTS[name];
  const id = $('trail-integration').value;
  const generation = trail.generation;
  const cursor = more ? trail.cursors[name] : null;
  const page = await api('GET', `${company()}/integrations/${id}/${list.path}${query({ limit: 30, cursor, ...list.filter() })}`);
  if (generation !== trail.generation) return;
  const body = $(list.body);
  if (!more) body.replaceChildren();
  body.append(...page.items.map(list.row));
  if (!body.children.length) body.append(el('tr', {}, el('td', { colspan: list.columns, text: list.empty })));
  trail.cursors[name] = page.next_cursor;
  $(list.more).hidden = !page.next_cursor;
}

/// The selected integration's recent events and dead letters, from their newest.
async function loadTrailLists() {
  const id = $('trail-integration').value;
  ++trail.generation;
  trail.cursors = {};
  if (!id) {
    for (const list of Object.values(TRAIL_LISTS)) { $(list.body).replaceChildren(); $(list.more).hidden = true; }
    return;
  }
  await Promise.all(Object.keys(TRAIL_LISTS).map((name) => loadTrailPage(name, false)));
}

async function loadTrailSection() {
  if (!state.integrations.length) state.integrations = await all(`${company()}/integrations`);
  fillSelect($('trail-integration'), state.integrations.map((i) => [i.id, i.name]));
  await loadTrailLists();
}

document.addEventListener('DOMContentLoaded', () => {
  $('trail-form').addEventListener('submit', (event) => {
    event.preventDefault();
    showTrail($('trail-record').value.trim()).catch(reportUnexpected);
  });
  $('trail-integration').addEventListener('change', () => loadTrailLists().catch(reportUnexpected));
  $('trail-only-unmatched').addEventListener('change', () => loadTrailLists().catch(reportUnexpected));
  for (const [name, list] of Object.entries(TRAIL_LISTS)) {
    $(list.more).addEventListener('click', () => loadTrailPage(name, true).catch(reportUnexpected));
  }
});
