// Live sessions of the chosen organisation, filtered by username, each revocable.

import { del, get, seg } from './api.js';
import { action, field, form, h, notify, pagedTable, screen, time } from './ui.js';

export function render(ctx) {
  const base = `/organisations/${seg(ctx.org)}/sessions`;
  let username = '';
  const table = pagedTable({
    testid: 'sessions-table',
    caption: `Live sessions of ${ctx.org}`,
    empty: 'No live sessions.',
    load: (cursor) => get(base, { cursor, username }),
    columns: [
      { title: 'User', cell: (s) => s.username },
      { title: 'Unit', cell: (s) => s.unit },
      { title: 'Method', cell: (s) => s.method },
      { title: 'Started', class: 'time', cell: (s) => time(s.created_at) },
      { title: 'Refreshed', class: 'time', cell: (s) => time(s.refreshed_at) },
      { title: 'Ends', class: 'time', cell: (s) => time(s.expires_at) },
      { title: 'Client', cell: (s) => s.client ?? '' },
      { title: 'Id', class: 'id', cell: (s) => s.id },
      {
        title: 'Actions',
        class: 'actions-cell',
        cell: (s) =>
          action('Revoke', `Revoke the session of ${s.username} started ${time(s.created_at)}`, async () => {
            await del(`${base}/${seg(s.id)}`);
            notify(`Session of ${s.username} revoked.`);
            await table.refresh();
          }),
      },
    ],
  });
  const filter = form(
    { role: 'search', 'aria-label': 'Filter sessions', class: 'form filter' },
    [field('Username', { name: 'username', autocomplete: 'off' }, 'Empty for every user')],
    'Filter',
    async (values) => {
      username = values.username;
      await table.reload();
    },
  );
  screen(`Sessions of ${ctx.org}`, filter, table.element);
}
