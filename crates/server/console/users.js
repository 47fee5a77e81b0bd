// Users of the chosen organisation: create, disable or enable, change a role, set a password, end sessions.

import { del, get, patch, post, seg } from './api.js';
import { action, clearAlert, field, form, h, notify, pagedTable, screen, select, time } from './ui.js';

/** The roles the signed-in user may grant: an admin never grants operator. */
function roles(ctx) {
  const all = [
    ['member', 'member'],
    ['admin', 'admin'],
  ];
  return ctx.role === 'operator' ? [...all, ['operator', 'operator']] : all;
}

/** `options` with `role` among them (an admin sees an operator's role, though it may not grant it). */
function withRole(options, role) {
  return options.some(([value]) => value === role) ? options : [...options, [role, role]];
}

/** A comma-separated list as an array of its non-empty entries. */
function list(text) {
  return text
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
}

export function render(ctx) {
  const base = `/organisations/${seg(ctx.org)}/users`;
  const user = (username) => `${base}/${seg(username)}`;
  const panel = h('section', { class: 'panel', 'aria-label': 'Manage a user', hidden: true });

  const table = pagedTable({
    testid: 'users-table',
    caption: `Users of ${ctx.org}`,
    empty: 'No users yet.',
    load: (cursor) => get(base, { cursor }),
    columns: [
      { title: 'Username', cell: (u) => u.username },
      { title: 'Role', cell: (u) => u.role },
      { title: 'Status', cell: (u) => (u.disabled ? 'disabled' : 'active') },
      { title: 'Units', cell: (u) => u.units.map((unit) => unit.name).join(', ') },
      { title: 'Created', class: 'time', cell: (u) => time(u.created_at) },
      {
        title: 'Actions',
        class: 'actions-cell',
        cell: (u) => [
          action(
            u.disabled ? 'Enable' : 'Disable',
            `${u.disabled ? 'Enable' : 'Disable'} ${u.username}`,
            async () => {
              await patch(user(u.username), { disabled: !u.disabled });
              notify(`${u.username} ${u.disabled ? 'enabled' : 'disabled'}.`);
              await table.refresh();
            },
          ),
          h('button', { type: 'button', 'aria-label': `Manage ${u.username}`, onclick: () => manage(u) }, 'Manage'),
        ],
      },
    ],
  });

  function manage(u) {
    clearAlert();
    const close = h('button', { type: 'button', onclick: () => { panel.hidden = true; } }, 'Close');
    panel.replaceChildren(
      h('h2', { tabindex: '-1' }, `Manage ${u.username}`),
      form(
        { 'aria-label': `Change the role of ${u.username}` },
        [select('Role', { name: 'role' }, withRole(roles(ctx), u.role))],
        'Change role',
        async (values) => {
          await patch(user(u.username), { role: values.role });
          notify(`${u.username} is now ${values.role}.`);
          await table.refresh();
        },
      ),
      form(
        { 'aria-label': `Set the password of ${u.username}` },
        [field('New password', { name: 'password', type: 'password', autocomplete: 'new-password' })],
        'Set password',
        async (values, element) => {
          await patch(user(u.username), { password: values.password });
          element.reset();
          notify(`The password of ${u.username} is set.`);
        },
      ),
      h(
        'div',
        { class: 'actions' },
        action('End sessions', `End every session of ${u.username}`, async () => {
          const { ended } = await del(`${user(u.username)}/sessions`);
          notify(`${ended} session${ended === 1 ? '' : 's'} of ${u.username} ended.`);
        }),
        close,
      ),
    );
    panel.querySelector('select').value = u.role;
    panel.hidden = false;
    panel.querySelector('h2').focus();
  }

  const create = form(
    { 'data-testid': 'create-user-form', 'aria-label': 'Create a user' },
    [
      field('Username', { name: 'username', required: true, autocomplete: 'off' }),
      field('Password', { name: 'password', type: 'password', autocomplete: 'new-password' }, 'Optional: without one, the user logs in with keys only'),
      field('Units', { name: 'units', autocomplete: 'off' }, 'Names, codes or ids, comma-separated'),
      field('Default unit', { name: 'default_unit', autocomplete: 'off' }, 'Optional: the first unit otherwise'),
      select('Role', { name: 'role' }, roles(ctx)),
    ],
    'Create user',
    async (values, element) => {
      const body = { username: values.username, units: list(values.units), role: values.role };
      if (values.password) body.password = values.password;
      if (values.default_unit) body.default_unit = values.default_unit;
      const created = await post(base, body);
      element.reset();
      notify(`User ${created.username} created.`);
      await table.reload();
    },
  );
  screen(`Users of ${ctx.org}`, h('h2', {}, 'Create a user'), create, panel, table.element);
}
