// The audit log on the management page, readable: who (the token's name, or `cli` for
// `crm-sync apply`; viewers read only "admin token", as the API tells them), what (the action in words on the object's name, not its id) and each change
// as "before → after". The raw record stays one click away (“Raw”), for support.
// Uses the helpers of app.js (api, el, company, state, ...), loaded before it.
'use strict';

let auditGeneration = 0;

const AUDIT_VERBS = {
  created: 'created', updated: 'changed', deleted: 'deleted', renamed: 'renamed', activated: 'activated',
  deactivated: 'deactivated', member_placed: 'placed', member_removed: 'removed',
  webhook_token_rotated: 'generated a new webhook token for', credentials_rotated: 'replaced credentials of',
  crm_identity_mapped: 'mapped a CRM user to', settings_changed: 'changed settings of',
  crm_identity_unmapped: 'unmapped a CRM user from', merged: 'merged a duplicate into', reactivated: 'reactivated',
};

/// The audited object by name where the page knows it ("workflow Won deals"), else its id.
function auditTarget(e) {
  if (e.target_type === 'company') return `company ${state.session.company_name}`;
  const lists = { integration: state.integrations, workflow: state.workflows, team: state.teams, user: state.users };
  const found = (lists[e.target_type] || []).find((x) => x.id === e.target_id);
  const name = (found && (found.name || found.display_name)) || (e.details && (e.details.name || e.details.display_name));
  return `${e.target_type.replace(/_/g, ' ')} ${name || e.target_id}`;
}

const teamName = (id) => (state.teams.find((t) => t.id === id) || {}).name || id;

function auditWhat(e) {
  const verb = e.action.split('.').slice(1).join('.');
  const what = `${AUDIT_VERBS[verb] || verb.replace(/_/g, ' ')} ${auditTarget(e)}`;
  const team = e.details && e.details.team_id;
  if (verb === 'member_placed' && team) return `${what} on team ${teamName(team)}`;
  if (verb === 'member_removed' && team) return `${what} from team ${teamName(team)}`;
  return what;
}

/// A value in words: strings as they are, nothing as "—", lists joined, objects as compact JSON.
function auditValue(v) {
  if (v === null || v === undefined || v === '') return '—';
  if (typeof v === 'boolean') return v ? 'on' : 'off';
  if (Array.isArray(v)) return v.map(auditValue).join(', ');
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/// One line per change: "auto_sync_users: off → on", "active: inactive → active", "name: Sales".
function auditChanges(details) {
  const lines = [];
  const d = { ...(details || {}) };
  if ('was_active' in d && 'active' in d) {
    if (d.was_active !== d.active) lines.push(`active: ${d.was_active ? 'active' : 'inactive'} → ${d.active ? 'active' : 'inactive'}`);
    delete d.was_active; delete d.active;
  }
  if (d.spec && typeof d.spec === 'object') {
    const s = d.spec;
    lines.push(`${s.name}: ${s.object_type} (${auditValue(s.triggers)}) by ${s.user_field} counts as ${s.activity_type}`
      + `${s.value_field ? `, value ${s.value_field}` : ''}; conditions ${JSON.stringify(s.conditions)}`);
    delete d.spec;
  }
  for (const [key, v] of Object.entries(d)) {
    const label = key.replace(/_/g, ' ');
    if (v && typeof v === 'object' && !Array.isArray(v) && 'from' in v && 'to' in v) {
      lines.push(`${label}: ${auditValue(v.from)} → ${auditValue(v.to)}`);
    } else if (key === 'team_id') {
      continue; // named in "What"
    } else if (key === 'integration_id' && typeof v === 'string') {
      lines.push(`integration: ${integrationLabel(v)}`);
    } else {
      lines.push(`${label}: ${auditValue(v)}`);
    }
  }
  return lines;
}

function auditRow(e) {
  const changes = el('td', { class: 'changes' });
  const lines = auditChanges(e.details);
  if (lines.length) changes.append(el('ul', {}, ...lines.map((l) => el('li', { text: l }))));
  changes.append(el('details', {}, el('summary', { text: 'Raw' }),
    el('code', { class: 'secret', text: `${e.action} ${e.target_type} ${e.target_id} ${JSON.stringify(e.details)}` })));
  return el('tr', {}, el('td', { text: e.at.replace('T', ' ').slice(0, 19) }), el('td', { text: e.actor }),
    el('td', { text: auditWhat(e) }), changes);
}

async function loadAudit(fresh) {
  const generation = fresh ? ++auditGeneration : auditGeneration;
  const page = await api('GET', `${company()}/audit-log${query({ limit: 50, cursor: fresh ? null : state.auditCursor })}`);
  if (!state.workflows.length) state.workflows = await all(`${company()}/workflows`);
  if (generation !== auditGeneration) return;
  if (fresh) $('audit-body').replaceChildren();
  state.auditCursor = page.next_cursor;
  $('audit-more').hidden = !page.next_cursor;
  for (const e of page.items) $('audit-body').append(auditRow(e));
}

document.addEventListener('DOMContentLoaded', () => {
  $('audit-more').addEventListener('click', () => loadAudit(false).catch(reportUnexpected));
});
