// The people lifecycle in the users table: rename and set the email, deactivate / reactivate
// (off and back on leaderboards), unmap a CRM identity, and merge a duplicate account into the
// one kept. One "Manage" cell per user row, for admins. Uses the helpers of app.js, loaded before.
'use strict';

async function afterPeopleChange(message) {
  flash(message);
  await Promise.all([loadUsers(), loadUsersCache()]);
}

function renameForm(u) {
  const name = el('input', { id: `rename-name-${u.id}`, value: u.display_name, 'data-field': 'display_name', required: true });
  const email = el('input', { id: `rename-email-${u.id}`, type: 'email', value: u.email || '', 'data-field': 'email' });
  const error = el('p', { class: 'error', role: 'alert' });
  const form = el('form', { class: 'grid' },
    el('label', { for: name.id, text: 'Name' }), name,
    el('label', { for: email.id, text: 'Email' }), email,
    el('span'), el('button', { type: 'submit', text: 'Save', 'aria-label': `Save ${u.display_name}` }),
    error);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    await guarded(error, async () => {
      const r = await api('PATCH', `${company()}/users/${u.id}`, { display_name: name.value, email: email.value.trim() || null });
      await afterPeopleChange(`${r.display_name} saved.`);
    }, form);
  });
  return el('details', {}, el('summary', { text: 'Rename', 'aria-label': `Rename ${u.display_name}` }), form);
}

function activeButton(u) {
  const inactive = u.status === 'inactive';
  return el('button', {
    type: 'button', text: inactive ? 'Reactivate' : 'Deactivate',
    'aria-label': `${inactive ? 'Reactivate' : 'Deactivate'} ${u.display_name}`,
    onclick: async () => {
      if (!inactive && !confirm(`Deactivate ${u.display_name}? They drop off leaderboards until reactivated.`)) return;
      try {
        const r = await api('POST', `${company()}/users/${u.id}/${inactive ? 'reactivate' : 'deactivate'}`);
        await afterPeopleChange(inactive ? `${r.display_name} is active again.` : `${r.display_name} is deactivated and off leaderboards.`);
      } catch (e) { flash(e.message); }
    },
  });
}

function unmapButtons(u) {
  return u.crm_identities.map((c) => el('button', {
    type: 'button', text: `Unmap ${c.crm_user_id}`,
    'aria-label': `Unmap CRM user ${c.crm_user_id} from ${u.display_name}`,
    onclick: async () => {
      if (!confirm(`Unmap CRM user ${c.crm_user_id} (${integrationLabel(c.integration_id)}) from ${u.display_name}? Its activities wait unmapped until mapped again.`)) return;
      try {
        const r = await api('DELETE', `${company()}/users/${u.id}/crm-identities/${c.integration_id}/${encodeURIComponent(c.crm_user_id)}`);
        await afterPeopleChange(`${c.crm_user_id} unmapped from ${r.user.display_name}; ${r.detached_activities} activities wait unmapped.`);
      } catch (e) { flash(e.message); }
    },
  }));
}

function mergeControl(u) {
  const others = state.users.filter((x) => x.id !== u.id);
  if (!others.length) return null;
  const select = el('select', { id: `merge-${u.id}`, 'aria-label': `Duplicate to merge into ${u.display_name}` });
  fillSelect(select, others.map((x) => [x.id, x.email ? `${x.display_name} <${x.email}>` : x.display_name]));
  return el('span', { class: 'inline' }, select, el('button', {
    type: 'button', text: 'Merge into this user', 'aria-label': `Merge the selected duplicate into ${u.display_name}`,
    onclick: async () => {
      const duplicate = select.options[select.selectedIndex].text;
      if (!confirm(`Merge ${duplicate} into ${u.display_name}? Its CRM identities, activities and teams move to ${u.display_name} and ${duplicate} is removed.`)) return;
      try {
        const r = await api('POST', `${company()}/users/${u.id}/merge`, { duplicate_user_id: select.value });
        await afterPeopleChange(`${duplicate} merged into ${r.user.display_name}: ${r.moved_identities} CRM identities and ${r.moved_activities} activities moved.`);
      } catch (e) { flash(e.message); }
    },
  }));
}

/// The "Manage" cell of a user row: empty for viewers.
function peopleCell(u) {
  const cell = el('td', { class: 'manage' });
  if (!isAdmin()) return cell;
  cell.append(renameForm(u), activeButton(u), ' ', ...unmapButtons(u), mergeControl(u));
  return cell;
}
