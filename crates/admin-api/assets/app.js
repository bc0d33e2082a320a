// The integration management page. Plain DOM code, no framework and no build step: everything it
// shows comes from the admin API of the same origin, authenticated with the token typed at sign-in
// (kept in sessionStorage, so closing the tab signs out). Text from the API is only ever set as
// textContent, never parsed as HTML.
'use strict';

const state = { token: null, session: null, integrations: [], teams: [], users: [], workflows: [], auditCursor: null, usersCursor: null };
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `request failed (${status})`);
    this.status = status;
    this.field = body && body.field;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 204) return null;
  let data = null;
  try { data = await response.json(); } catch (_) { /* an empty or non-JSON body */ }
  if (response.status === 401 && state.session) { signOut('Your token is no longer valid. Sign in again.'); }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

const company = () => `/admin/v1/companies/${state.session.company_id}`;

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

/// Every page of a list, for the small lists the page shows whole (integrations, teams, workflows).
async function all(path, params = {}) {
  let items = [];
  let cursor = null;
  do {
    const page = await api('GET', path + query({ ...params, limit: 200, cursor }));
    items = items.concat(page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < 5000);
  return items;
}

// ---------------------------------------------------------------- helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (v === true) node.setAttribute(k, '');
    else if (v !== false && v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function flash(text) { $('flash').textContent = text; }

function showError(target, error, form) {
  const node = typeof target === 'string' ? $(target) : target;
  node.textContent = error.field ? `${error.message} (field: ${error.field})` : error.message;
  if (form) {
    form.querySelectorAll('[aria-invalid]').forEach((n) => n.removeAttribute('aria-invalid'));
    if (error.field) {
      const top = error.field.split('/')[0];
      const input = form.querySelector(`[data-field="${top}"]`);
      if (input) { input.setAttribute('aria-invalid', 'true'); if (input.focus) input.focus(); }
    }
  }
}

function clearError(id, form) {
  $(id).textContent = '';
  if (form) form.querySelectorAll('[aria-invalid]').forEach((n) => n.removeAttribute('aria-invalid'));
}

const isAdmin = () => state.session && state.session.role === 'admin';
const date = (iso) => (iso ? iso.slice(0, 10) : '');
const userName = (id) => { const u = state.users.find((x) => x.id === id); return u ? u.display_name : id; };

async function guarded(errorTarget, fn, form) {
  try { await fn(); } catch (e) { if (e instanceof ApiError) showError(errorTarget, e, form); else throw e; }
}

// ---------------------------------------------------------------- sign-in and navigation

async function signIn(token) {
  state.token = token;
  const session = await api('GET', '/admin/v1/session');
  state.session = session;
  sessionStorage.setItem('crm-sync-admin-token', token);
  $('who-text').textContent = `${session.company_name} — ${session.role}`;
  $('who').hidden = false;
  $('signin-section').hidden = true;
  $('app').hidden = false;
  document.body.classList.toggle('viewer', session.role !== 'admin');
  await refreshAll();
  route();
}

function signOut(message) {
  sessionStorage.removeItem('crm-sync-admin-token');
  state.token = null;
  state.session = null;
  $('app').hidden = true;
  $('who').hidden = true;
  $('signin-section').hidden = false;
  $('signin-error').textContent = message || '';
  $('token').value = '';
  $('token').focus();
}

function route() {
  const sections = [...document.querySelectorAll('.panel')];
  const wanted = location.hash.slice(1);
  const current = sections.find((s) => s.id === wanted) || sections[0];
  for (const s of sections) s.hidden = s !== current;
  for (const a of document.querySelectorAll('nav a')) {
    if (a.getAttribute('href') === `#${current.id}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const loaders = { users: loadUsers, unmapped: loadUnmapped, leaderboard: () => Promise.all([loadLeaderboard(), loadCompanySettings()]), audit: () => loadAudit(true), workflows: loadWorkflows, teams: loadTeams, integrations: loadIntegrations, trail: loadTrailSection };
  if (loaders[current.id]) loaders[current.id]().catch(reportUnexpected);
}

function reportUnexpected(e) { flash(`Something went wrong: ${e.message}`); }

async function refreshAll() {
  await Promise.all([loadIntegrations(), loadTeams(), loadUsersCache()]);
}

// ---------------------------------------------------------------- integrations

async function loadIntegrations() {
  state.integrations = await all(`${company()}/integrations`);
  const body = $('integrations-body');
  body.replaceChildren();
  for (const i of state.integrations) {
    const toggle = el('input', {
      type: 'checkbox', role: 'switch', id: `autosync-${i.id}`, 'aria-checked': String(i.auto_sync_users),
      disabled: !isAdmin(),
    });
    toggle.checked = i.auto_sync_users;
    toggle.addEventListener('change', async () => {
      try {
        const updated = await api('PATCH', `${company()}/integrations/${i.id}`, { auto_sync_users: toggle.checked });
        toggle.setAttribute('aria-checked', String(updated.auto_sync_users));
        flash(`Auto-sync users is now ${updated.auto_sync_users ? 'on' : 'off'} for ${updated.name}.`);
      } catch (e) { toggle.checked = !toggle.checked; flash(e.message); }
    });
    // Only CRMs that authenticate webhooks with the token (Salesforce) are offered one.
    const rotate = isAdmin() && i.uses_webhook_token ? el('button', {
      type: 'button', text: i.has_webhook_token ? 'Generate new token' : 'Generate token',
      onclick: async () => {
        if (i.has_webhook_token && !confirm('The old token stops working at once. Continue?')) return;
        const r = await api('POST', `${company()}/integrations/${i.id}/webhook-token`);
        $('new-token').textContent = `New webhook token for ${i.name} (shown once): ${r.webhook_token} — paste into the CRM: ${r.webhook_url || r.webhook_path}`;
        await loadIntegrations();
      },
    }) : null;
    const tokenCell = i.uses_webhook_token
      ? el('td', {}, el('span', { text: i.has_webhook_token ? 'set ' : 'not set ' }), rotate)
      : el('td', { text: 'not used (credentials below)' });
    body.append(el('tr', {},
      el('th', { scope: 'row', text: i.name }),
      el('td', { text: i.crm }),
      el('td', { text: i.crm_account_id }),
      el('td', {}, el('span', { class: 'switch' }, toggle, el('label', { for: toggle.id, text: `Auto-sync users for ${i.name}` }))),
      tokenCell,
      el('td', {}, el('code', { class: 'secret', 'aria-label': `Webhook URL of ${i.name}`, text: i.webhook_url || i.webhook_path })),
      healthCell(i), deleteIntegrationCell(i)));
  }
  fillSelect($('wf-integration'), state.integrations.map((i) => [i.id, i.name]));
  fillSelect($('cred-integration'), state.integrations.map((i) => [i.id, i.name]));
  fillSelect($('sync-integration'), state.integrations.map((i) => [i.id, i.name]));
  loadSync().catch(reportUnexpected);
  // Without secrets.encryption_key the credentials cannot be read: say so there, keep the rest.
  await loadCredentials().catch((e) => { $('credentials-error').textContent = e.message; });
}

/// "salesforce-prod (salesforce)" for an integration id; the id itself if it is not loaded.
function integrationLabel(id) {
  const i = state.integrations.find((x) => x.id === id);
  return i ? `${i.name} (${i.crm})` : id;
}

function fillSelect(select, options, keep) {
  const before = select.value;
  select.replaceChildren(...(keep || []).map(([v, t]) => el('option', { value: v, text: t })),
    ...options.map(([v, t]) => el('option', { value: v, text: t })));
  if ([...select.options].some((o) => o.value === before)) select.value = before;
}

// ---------------------------------------------------------------- workflows and the condition builder

async function loadWorkflows() {
  state.workflows = await all(`${company()}/workflows`);
  const body = $('workflows-body');
  body.replaceChildren();
  for (const w of state.workflows) {
    const actions = el('td', {});
    // A dry run is a POST, which viewers' tokens may not make: admins only, like the rest.
    if (isAdmin()) {
      actions.append(el('button', { type: 'button', text: 'Dry run', onclick: () => openDryRun(w) }));
      actions.append(' ', el('button', { type: 'button', text: 'Edit', onclick: () => openWorkflowForm(w) }),
        ' ', el('button', {
          type: 'button', text: w.active ? 'Deactivate' : 'Activate',
          onclick: async () => {
            await api('POST', `${company()}/workflows/${w.id}/${w.active ? 'deactivate' : 'activate'}`);
            flash(`${w.name} is now ${w.active ? 'inactive' : 'active'}.`);
            await loadWorkflows();
          },
        }),
        ' ', el('button', {
          type: 'button', text: 'Delete',
          onclick: async () => {
            if (!confirm(`Delete ${w.name} and the activities it recorded?`)) return;
            await api('DELETE', `${company()}/workflows/${w.id}`);
            flash(`${w.name} deleted.`);
            await loadWorkflows();
          },
        }));
    }
    body.append(el('tr', {},
      el('th', { scope: 'row', text: w.name }), el('td', { text: integrationLabel(w.integration_id) }), el('td', { text: w.object_type }),
      el('td', { text: w.activity_type }), el('td', { text: w.active ? 'active' : 'inactive' }), actions));
  }
}

function addConditionRow(c) {
  const row = $('condition-row').content.firstElementChild.cloneNode(true);
  const n = $('condition-rows').children.length + 1;
  for (const input of row.querySelectorAll('input, select')) input.setAttribute('aria-describedby', `condition-${n}`);
  row.prepend(el('span', { id: `condition-${n}`, class: 'visually-hidden', text: `Condition ${n}` }));
  if (c) {
    row.querySelector('.c-field').value = c.field || '';
    row.querySelector('.c-op').value = c.op || 'eq';
    const type = c.value === null ? 'null' : typeof c.value === 'number' ? 'number' : typeof c.value === 'boolean' ? 'boolean' : 'text';
    row.querySelector('.c-type').value = type;
    row.querySelector('.c-value').value = c.value === null ? '' : String(c.value);
  }
  row.querySelector('.c-remove').addEventListener('click', () => row.remove());
  $('condition-rows').append(row);
  return row;
}

/// The builder's rows as condition JSON; the advanced JSON editor wins while it is open.
function conditionsJson() {
  if ($('conditions-advanced').open) {
    const text = $('wf-conditions-json').value.trim();
    if (!text) return { all: [] };
    try { return JSON.parse(text); } catch (_) { throw new ApiError(422, { message: 'the condition JSON does not parse', field: 'conditions' }); }
  }
  return rowsJson();
}

function rowsJson() {
  const leaves = [...$('condition-rows').children].map((row, i) => {
    const field = row.querySelector('.c-field').value.trim();
    const op = row.querySelector('.c-op').value;
    const type = row.querySelector('.c-type').value;
    const raw = row.querySelector('.c-value').value;
    let value = raw;
    if (type === 'number') {
      value = Number(raw);
      if (raw.trim() === '' || Number.isNaN(value)) throw new ApiError(422, { message: `condition ${i + 1}: ${JSON.stringify(raw)} is not a number`, field: `conditions/${$('wf-mode').value}/${i}/value` });
    } else if (type === 'boolean') value = /^(true|yes|1)$/i.test(raw.trim());
    else if (type === 'null') value = null;
    return { field, op, value };
  });
  return { [$('wf-mode').value]: leaves };
}

/// Whether the builder's row keeps everything a stored comparison says: a field, one of the
/// row's operators and a plain value, nothing else (a `type` or `case_sensitive` the row cannot
/// show would be dropped on save, changing how the value compares).
function rowCanHold(c) {
  return c && typeof c.field === 'string' && c.field
    && ['eq', 'ne', 'gt', 'gte', 'lt', 'lte'].includes(c.op)
    && (c.value === null || ['string', 'number', 'boolean'].includes(typeof c.value))
    && Object.keys(c).every((k) => k === 'field' || k === 'op' || k === 'value');
}

/// Rows for a stored condition when it is a flat all/any list of comparisons; else the JSON editor.
function showConditions(conditions) {
  $('condition-rows').replaceChildren();
  $('wf-conditions-json').value = JSON.stringify(conditions || { all: [] }, null, 2);
  const key = conditions && Object.keys(conditions).length === 1 ? Object.keys(conditions)[0] : null;
  const flat = (key === 'all' || key === 'any') && Array.isArray(conditions[key]) && conditions[key].every(rowCanHold);
  $('conditions-advanced').open = !flat;
  if (flat) {
    $('wf-mode').value = key;
    conditions[key].forEach(addConditionRow);
    if (!conditions[key].length) addConditionRow();
  }
}

function openWorkflowForm(w) {
  const form = $('workflow-form');
  clearError('workflow-error', form);
  $('workflow-form-title').textContent = w ? `Edit ${w.name}` : 'New workflow';
  $('workflow-id').value = w ? w.id : '';
  $('wf-integration').disabled = !!w;
  if (w) $('wf-integration').value = w.integration_id;
  $('wf-name').value = w ? w.name : '';
  $('wf-object').value = w ? w.object_type : 'Opportunity';
  for (const box of form.querySelectorAll('input[name="trigger"]')) box.checked = w ? w.triggers.includes(box.value) : box.value !== 'deleted';
  showConditions(w ? w.conditions : { all: [{ field: 'StageName', op: 'eq', value: 'Closed Won' }] });
  $('wf-user-field').value = w ? w.user_field : 'OwnerId';
  $('wf-value-field').value = w ? (w.value_field || '') : 'Amount';
  $('wf-date-field').value = w ? (w.date_field || '') : 'CloseDate';
  $('wf-activity-type').value = w ? w.activity_type : 'deal_won';
  $('wf-active').checked = w ? w.active : false;
  form.hidden = false;
  $('wf-name').focus();
}

async function saveWorkflow(event) {
  event.preventDefault();
  const form = $('workflow-form');
  clearError('workflow-error', form);
  await guarded('workflow-error', async () => {
    const id = $('workflow-id').value;
    const body = {
      name: $('wf-name').value,
      object_type: $('wf-object').value,
      triggers: [...form.querySelectorAll('input[name="trigger"]:checked')].map((b) => b.value),
      conditions: conditionsJson(),
      user_field: $('wf-user-field').value,
      value_field: $('wf-value-field').value.trim() || null,
      date_field: $('wf-date-field').value.trim() || null,
      activity_type: $('wf-activity-type').value,
      active: $('wf-active').checked,
    };
    const saved = id
      ? await api('PATCH', `${company()}/workflows/${id}`, body)
      : await api('POST', `${company()}/workflows`, { integration_id: $('wf-integration').value, ...body });
    form.hidden = true;
    flash(`Workflow ${saved.name} saved${saved.active ? ' and active' : ' (inactive)'}.`);
    await loadWorkflows();
    openDryRun(saved);
  }, form);
}

// ---------------------------------------------------------------- teams

async function loadTeams() {
  state.teams = await all(`${company()}/teams`);
  const body = $('teams-body');
  body.replaceChildren();
  for (const t of state.teams) {
    const actions = el('td', {});
    if (isAdmin()) {
      actions.append(el('button', {
        type: 'button', text: 'Rename',
        onclick: async () => {
          const name = prompt('New name', t.name);
          if (!name) return;
          try { await api('PATCH', `${company()}/teams/${t.id}`, { name }); await loadTeams(); } catch (e) { flash(e.message); }
        },
      }), ' ', el('button', {
        type: 'button', text: 'Delete',
        onclick: async () => {
          if (!confirm(`Delete ${t.name}? Its members on no other team stop counting.`)) return;
          await api('DELETE', `${company()}/teams/${t.id}`);
          await loadTeams();
        },
      }));
    }
    body.append(el('tr', {}, el('th', { scope: 'row', text: t.name }), el('td', { class: 'num', text: String(t.member_count) }), actions));
  }
  fillSelect($('lb-team'), state.teams.map((t) => [t.id, t.name]), [['', 'all teams']]);
}

// ---------------------------------------------------------------- users

async function loadUsersCache() { state.users = await all(`${company()}/users`); }

function userFilter() {
  const show = $('users-show').value;
  return {
    status: ['pending', 'active', 'inactive'].includes(show) ? show : undefined,
    on_team: show === 'no-team' ? 'false' : undefined,
    source: $('users-source').value || undefined,
  };
}

// Loads can overlap (a click while the previous answer is on its way): only the newest one renders.
let usersGeneration = 0;

async function loadUsers(more) {
  const generation = more ? usersGeneration : ++usersGeneration;
  const cursor = more ? state.usersCursor : null;
  const page = await api('GET', `${company()}/users${query({ ...userFilter(), limit: 50, cursor })}`);
  if (!state.teams.length) await loadTeams();
  if (generation !== usersGeneration) return;
  const body = $('users-body');
  if (!more) body.replaceChildren();
  state.usersCursor = page.next_cursor;
  $('users-more').hidden = !page.next_cursor;
  for (const u of page.items) body.append(userRow(u));
  if (!body.children.length) body.append(el('tr', {}, el('td', { colspan: '7', text: 'No users to show.' })));
}

function userRow(u) {
  const teams = el('td', {});
  for (const t of u.teams) {
    teams.append(el('span', { text: t.name }));
    if (isAdmin()) {
      teams.append(' ', el('button', {
        type: 'button', text: 'Remove', 'aria-label': `Remove ${u.display_name} from ${t.name}`,
        onclick: async () => {
          await api('DELETE', `${company()}/teams/${t.id}/members/${u.id}`);
          flash(`${u.display_name} removed from ${t.name}.`);
          await loadUsers();
        },
      }));
    }
    teams.append(el('br'));
  }
  const place = el('td', {});
  if (isAdmin()) {
    const select = el('select', { id: `place-${u.id}`, 'aria-label': `Team for ${u.display_name}` });
    fillSelect(select, state.teams.filter((t) => !u.teams.some((m) => m.id === t.id)).map((t) => [t.id, t.name]));
    place.append(select, ' ', el('button', {
      type: 'button', text: 'Place on team', 'aria-label': `Place ${u.display_name} on team`, disabled: !select.options.length,
      onclick: async () => {
        try {
          const placed = await api('PUT', `${company()}/teams/${select.value}/members/${u.id}`);
          flash(`${placed.display_name} placed on ${select.options[select.selectedIndex].text} and now ${placed.status}.`);
          await Promise.all([loadUsers(), loadTeams(), loadUsersCache()]);
        } catch (e) { flash(e.message); }
      },
    }));
  }
  return el('tr', { 'data-user': u.id },
    el('th', { scope: 'row', text: u.display_name }), el('td', { text: u.email || '' }),
    el('td', {}, el('span', { class: `badge ${u.status}`, text: u.status })),
    el('td', { text: u.source === 'auto_sync' ? 'auto-synced' : 'manual' }),
    el('td', { text: u.crm_identities.map((c) => `${integrationLabel(c.integration_id)}: ${c.crm_user_id}`).join(', ') }),
    teams, place, peopleCell(u));
}

// ---------------------------------------------------------------- unmapped identities and activities

async function loadUnmapped() {
  await loadUsersCache();
  const identities = await all(`${company()}/crm-identities`, { mapped: 'false' });
  const body = $('identities-body');
  body.replaceChildren();
  for (const i of identities) {
    const cell = el('td', {});
    if (isAdmin()) {
      const select = el('select', { 'aria-label': `User for CRM user ${i.crm_user_id}` });
      fillSelect(select, state.users.map((u) => [u.id, u.display_name]));
      cell.append(select, ' ', el('button', {
        type: 'button', text: 'Map', 'aria-label': `Map CRM user ${i.crm_user_id}`, disabled: !select.options.length,
        onclick: async () => {
          try {
            const r = await api('POST', `${company()}/users/${select.value}/crm-identities`, { integration_id: i.integration_id, crm_user_id: i.crm_user_id });
            flash(`${i.crm_user_id} mapped to ${r.user.display_name}; ${r.attached_activities} activities attached.`);
            await loadUnmapped();
          } catch (e) { flash(e.message); }
        },
      }));
    }
    body.append(el('tr', {}, el('th', { scope: 'row', text: i.crm_user_id }), el('td', { text: i.display_name || '' }),
      el('td', { class: 'num', text: String(i.unmapped_activities) }), cell));
  }
  if (!identities.length) body.append(el('tr', {}, el('td', { colspan: '4', text: 'Every CRM user is mapped.' })));
  const activities = await api('GET', `${company()}/activities${query({ unmapped: 'true', state: 'recorded', limit: 200 })}`);
  const rows = $('unmapped-body');
  rows.replaceChildren();
  for (const a of activities.items) {
    rows.append(el('tr', {}, el('td', { text: a.crm_user_id }), el('td', { text: a.activity_type }),
      el('td', { class: 'num', text: a.value }), el('td', { text: date(a.activity_date) }), el('td', { text: `${a.object_type} ${a.record_id}` })));
  }
}

// ---------------------------------------------------------------- leaderboard

async function loadLeaderboard(event) {
  if (event) event.preventDefault();
  clearError('leaderboard-error');
  await guarded('leaderboard-error', async () => {
    const page = await api('GET', `${company()}/leaderboard${query({
      activity_type: $('lb-type').value, from: $('lb-from').value, to: $('lb-to').value, team_id: $('lb-team').value, limit: 200,
    })}`);
    const body = $('leaderboard-body');
    body.replaceChildren();
    for (const e of page.items) {
      body.append(el('tr', {}, el('td', { class: 'num', text: String(e.rank) }), el('th', { scope: 'row', text: e.display_name }),
        el('td', { class: 'num', text: e.total }), el('td', { class: 'num', text: String(e.count) }), el('td', { text: e.teams.join(', ') })));
    }
    if (!page.items.length) body.append(el('tr', {}, el('td', { colspan: '5', text: 'Nobody on a team has activities of this type in this period.' })));
  });
}

// ---------------------------------------------------------------- wiring

document.addEventListener('DOMContentLoaded', () => {
  $('signin').addEventListener('submit', async (event) => {
    event.preventDefault();
    $('signin-error').textContent = '';
    try { await signIn($('token').value.trim()); } catch (e) {
      state.token = null;
      $('signin-error').textContent = e instanceof ApiError && e.status === 401 ? 'That token is not valid.' : e.message;
    }
  });
  $('signout').addEventListener('click', () => signOut());
  window.addEventListener('hashchange', route);

  $('integration-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const form = event.target;
    clearError('integration-error', form);
    await guarded('integration-error', async () => {
      const i = await api('POST', `${company()}/integrations`, { name: $('integration-name').value, crm: $('integration-crm').value, crm_account_id: $('integration-account').value });
      form.reset();
      flash(`Integration ${i.name} added. Generate its webhook token next.`);
      await loadIntegrations();
    }, form);
  });


  $('workflow-new').addEventListener('click', () => openWorkflowForm(null));
  $('workflow-cancel').addEventListener('click', () => { $('workflow-form').hidden = true; });
  $('workflow-form').addEventListener('submit', saveWorkflow);
  $('condition-add').addEventListener('click', () => addConditionRow().querySelector('.c-field').focus());
  $('conditions-advanced').addEventListener('toggle', () => {
    // Opening the JSON editor starts from what the rows say; complex stored conditions have no rows.
    if ($('conditions-advanced').open && $('condition-rows').children.length) {
      try { $('wf-conditions-json').value = JSON.stringify(rowsJson(), null, 2); } catch (_) { /* keep the text */ }
    }
  });

  $('team-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    clearError('team-error');
    await guarded('team-error', async () => {
      const t = await api('POST', `${company()}/teams`, { name: $('team-name').value });
      $('team-name').value = '';
      flash(`Team ${t.name} created.`);
      await loadTeams();
    });
  });

  $('users-filter').addEventListener('submit', (event) => { event.preventDefault(); loadUsers().catch(reportUnexpected); });
  $('users-more').addEventListener('click', () => loadUsers(true).catch(reportUnexpected));
  $('user-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    clearError('user-error');
    await guarded('user-error', async () => {
      const u = await api('POST', `${company()}/users`, { display_name: $('user-name').value, email: $('user-email').value || null });
      event.target.reset();
      flash(`${u.display_name} added (pending until placed on a team).`);
      await Promise.all([loadUsers(), loadUsersCache()]);
    });
  });

  $('leaderboard-form').addEventListener('submit', loadLeaderboard);

  const saved = sessionStorage.getItem('crm-sync-admin-token');
  if (saved) signIn(saved).catch(() => signOut());
});
